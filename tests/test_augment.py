"""Tests of spinal_jax.data.augment against independent computations (scipy, numpy, torch grid_sample)."""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import ndimage, stats

from spinal_jax.data import augment as A

REPO = Path(__file__).resolve().parents[1]


def _images(n: int = 6, h: int = 28, w: int = 28, c: int = 1, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, h, w, c), dtype=np.uint8)


def _synthetic(h: int = 29, w: int = 29) -> np.ndarray:
    """A smooth-ish image with distinct, off-centre structure (so direction errors show)."""
    y, x = np.mgrid[0:h, 0:w]
    img = ((x * 7 + y * 3) % 251).astype(np.uint8)
    img[3:9, 4:20] = 255
    return img


# ---------------------------------------------------------------- rotation


@pytest.mark.parametrize("angle", [10.0, -7.3, 33.0])
def test_rotation_matches_scipy_nearest(angle: float) -> None:
    img = _synthetic()
    ours = np.asarray(A.rotate(jax.random.key(0), jnp.asarray(img[None, :, :, None]), (angle, angle)))[0, ..., 0]
    # scipy rotates about ((n-1)/2) in index coordinates, like torchvision; with axes=(1, 0) and rows
    # pointing down a positive scipy angle is a counter-clockwise turn on screen, as in torchvision.
    # mode="grid-constant": pixel i covers [i - 0.5, i + 0.5] and everything outside is 0, the same grid
    # as grid_sample(align_corners=False) (scipy's "constant" mode also keeps sources up to half a pixel
    # outside the image, so it would differ in a one-pixel band along the border).
    ref = ndimage.rotate(
        img.astype(np.float64), angle, axes=(1, 0), reshape=False, order=0, mode="grid-constant", cval=0.0
    )
    diff = ours != ref
    # Only pixels whose source coordinate is within float32 rounding of a half-integer may differ
    # (grid_sample rounds half to even, scipy rounds half up, float32 vs float64 coordinates).
    h, w = img.shape
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    a = math.radians(angle)
    cx, cy = (w - 1) / 2, (h - 1) / 2
    sx = math.cos(a) * (xx - cx) - math.sin(a) * (yy - cy) + cx
    sy = math.sin(a) * (xx - cx) + math.cos(a) * (yy - cy) + cy
    near_tie = (np.abs(sx - np.floor(sx) - 0.5) < 1e-4) | (np.abs(sy - np.floor(sy) - 0.5) < 1e-4)
    assert not np.any(diff & ~near_tie), np.argwhere(diff & ~near_tie)
    assert (ours > 0).mean() > 0.7  # the image did not vanish (corners go to the fill value)


def _torch_grid_sample(img: np.ndarray, src_x: np.ndarray, src_y: np.ndarray, mode: str) -> np.ndarray:
    """torchvision's _apply_grid_transform with fill 0: grid_sample(zeros) + sampled mask, then round."""
    torch = pytest.importorskip("torch")
    h, w = img.shape[:2]
    t = torch.from_numpy(img.astype(np.float32)).permute(2, 0, 1)[None]
    t = torch.cat([t, torch.ones_like(t[:, :1])], 1)
    gx = (torch.from_numpy(src_x) + 0.5) / (w / 2) - 1  # align_corners=False
    gy = (torch.from_numpy(src_y) + 0.5) / (h / 2) - 1
    grid = torch.stack([gx, gy], -1)[None].float()
    out = torch.nn.functional.grid_sample(t, grid, mode=mode, padding_mode="zeros", align_corners=False)
    val, mask = out[:, :-1], out[:, -1:]
    val = torch.where(mask < 0.5, torch.zeros_like(val), val) if mode == "nearest" else val * mask
    return torch.round(val)[0].permute(1, 2, 0).numpy()


def test_rotation_matches_torch_grid_sample() -> None:
    img = _images(1, 28, 28, 3, seed=1)[0]
    angle = 8.5
    ours = np.asarray(A.rotate(jax.random.key(0), jnp.asarray(img[None]), (angle, angle)))[0]
    a = math.radians(angle)
    yy, xx = np.mgrid[0:28, 0:28].astype(np.float64)
    c = 13.5
    sx = math.cos(a) * (xx - c) - math.sin(a) * (yy - c) + c
    sy = math.sin(a) * (xx - c) + math.cos(a) * (yy - c) + c
    ref = _torch_grid_sample(img, sx, sy, "nearest")
    assert (ours != ref).any(axis=-1).mean() < 0.01  # only exact rounding ties may differ


# ---------------------------------------------------------------- perspective


def _np_perspective_coeffs(start: np.ndarray, end: np.ndarray) -> np.ndarray:
    """Least squares in float64 for the 8 coefficients mapping end points to start points."""
    rows, rhs = [], []
    for (ex, ey), (sx, sy) in zip(end, start, strict=True):
        rows.append([ex, ey, 1, 0, 0, 0, -sx * ex, -sx * ey])
        rows.append([0, 0, 0, ex, ey, 1, -sy * ex, -sy * ey])
        rhs += [sx, sy]
    sol = np.linalg.lstsq(np.array(rows, float), np.array(rhs, float), rcond=None)[0]
    return np.append(sol, 1.0).reshape(3, 3)


def test_perspective_coefficients_match_lstsq() -> None:
    h, w = 28, 24
    start = np.array([[0, 0], [w - 1, 0], [w - 1, h - 1], [0, h - 1]], float)
    for i in range(20):
        end = np.asarray(A.perspective_params(jax.random.key(i), h, w, 0.5))
        ours = np.asarray(A.perspective_coefficients(jnp.asarray(end), h, w))
        np.testing.assert_allclose(ours, _np_perspective_coeffs(start, end), rtol=2e-5, atol=2e-5)


def test_perspective_warp_matches_torch_grid_sample() -> None:
    img = _images(1, 28, 28, 1, seed=2)[0]
    end = np.array([[3, 5], [25, 1], [21, 27], [6, 22]])
    start = np.array([[0, 0], [27, 0], [27, 27], [0, 27]], float)
    m = _np_perspective_coeffs(start, end)
    ours = np.asarray(
        A._materialize(A._warp(A._from_array(jnp.asarray(img)), jnp.asarray(m), (28, 28), "bilinear", offset=0.5))
    )
    # torchvision's _perspective_grid: coefficients act on pixel centres (x + 0.5, y + 0.5).
    yy, xx = np.mgrid[0:28, 0:28].astype(np.float64) + 0.5
    den = m[2, 0] * xx + m[2, 1] * yy + 1.0
    sx = (m[0, 0] * xx + m[0, 1] * yy + m[0, 2]) / den - 0.5
    sy = (m[1, 0] * xx + m[1, 1] * yy + m[1, 2]) / den - 0.5
    ref = _torch_grid_sample(img, sx, sy, "bilinear")
    # float32 vs float64 coefficients move values by < 1 grey level before rounding.
    assert np.abs(ours - ref).max() <= 1.0
    assert (ours != ref).mean() < 0.02


def test_perspective_params_follow_torchvision() -> None:
    h, w, d = 28, 28, 0.5
    keys = jax.random.split(jax.random.key(3), 4000)
    pts = np.asarray(jax.vmap(lambda k: A.perspective_params(k, h, w, d))(keys))
    bw = bh = int(d * 14) + 1  # 8
    lo_x, hi_x = (0, bw - 1), (w - bw, w - 1)
    lo_y, hi_y = (0, bh - 1), (h - bh, h - 1)
    expected = [(lo_x, lo_y), (hi_x, lo_y), (hi_x, hi_y), (lo_x, hi_y)]
    for corner, ((x0, x1), (y0, y1)) in enumerate(expected):
        for axis, (a, b) in enumerate(((x0, x1), (y0, y1))):
            v = pts[:, corner, axis]
            assert v.min() == a and v.max() == b
            counts = np.bincount(v - a, minlength=b - a + 1)
            assert stats.chisquare(counts).pvalue > 1e-3  # discrete uniform


def test_perspective_probability_and_identity() -> None:
    keys = jax.random.split(jax.random.key(4), 4000)
    mats = np.asarray(jax.vmap(lambda k: A.perspective_matrix(k, 28, 28, 0.5, 0.5))(keys))
    applied = ~np.all(np.isclose(mats, np.eye(3)), axis=(1, 2))
    assert abs(applied.mean() - 0.5) < 4 * math.sqrt(0.25 / 4000)
    x = jnp.asarray(_images(4))
    np.testing.assert_array_equal(np.asarray(A.perspective(jax.random.key(0), x, 0.0, p=1.0)), np.asarray(x, np.float32))
    np.testing.assert_array_equal(np.asarray(A.perspective(jax.random.key(0), x, 0.5, p=0.0)), np.asarray(x, np.float32))


# ---------------------------------------------------------------- random resized crop


def _np_rrc_params(rng: np.random.Generator, h: int, w: int, scale, ratio) -> tuple[int, int, int, int]:
    """RandomResizedCrop.get_params as documented: 10 tries, then the centre-crop fallback."""
    area = h * w
    for _ in range(10):
        target = area * rng.uniform(*scale)
        ar = math.exp(rng.uniform(math.log(ratio[0]), math.log(ratio[1])))
        cw, ch = round(math.sqrt(target * ar)), round(math.sqrt(target / ar))
        if 0 < cw <= w and 0 < ch <= h:
            return rng.integers(0, h - ch + 1), rng.integers(0, w - cw + 1), ch, cw
    in_ratio = w / h
    if in_ratio < ratio[0]:
        cw, ch = w, round(w / ratio[0])
    elif in_ratio > ratio[1]:
        cw, ch = round(h * ratio[1]), h
    else:
        cw, ch = w, h
    return (h - ch) // 2, (w - cw) // 2, ch, cw


@pytest.mark.parametrize("scale", [(0.08, 1.0), (0.95, 1.0)])
def test_rrc_params_distribution_and_bounds(scale) -> None:
    h, w, ratio, n = 28, 28, (3 / 4, 4 / 3), 4000
    keys = jax.random.split(jax.random.key(5), n)
    p = np.asarray(jax.vmap(lambda k: A.resized_crop_params(k, h, w, scale, ratio))(keys))
    top, left, ch, cw = p.T
    assert (top >= 0).all() and (left >= 0).all() and (ch >= 1).all() and (cw >= 1).all()
    assert (top + ch <= h).all() and (left + cw <= w).all()
    rng = np.random.default_rng(0)
    ref = np.array([_np_rrc_params(rng, h, w, scale, ratio) for _ in range(n)])
    for ours, theirs in ((ch * cw, ref[:, 2] * ref[:, 3]), (cw / ch, ref[:, 3] / ref[:, 2])):
        assert stats.ks_2samp(ours, theirs).pvalue > 1e-3
    # offsets uniform given the size: (top / (h - ch)) has mean 1/2 where h > ch
    m = ch < h
    assert abs((top[m] / (h - ch[m])).mean() - 0.5) < 0.03


def test_rrc_fallback_is_centre_crop() -> None:
    # Wide 10x40 image, area scale ≥ 0.9 with ratio ≤ 4/3 never fits (h ≥ 16 > 10): fallback h=10, w=13.
    p = np.asarray(A.resized_crop_params(jax.random.key(0), 10, 40, (0.9, 1.0), (3 / 4, 4 / 3)))
    np.testing.assert_array_equal(p, [0, 13, 10, 13])


def test_rrc_crop_resize_matches_torch_interpolate() -> None:
    torch = pytest.importorskip("torch")
    img = _images(1, 28, 28, 2, seed=6)[0]
    for params in ([1, 0, 27, 27], [0, 2, 26, 25], [3, 4, 20, 24]):
        t, left, ch, cw = params
        ours = np.asarray(A._materialize(A._resized_crop(A._from_array(jnp.asarray(img)), jnp.asarray(params), (28, 28))))
        crop = torch.from_numpy(img[t : t + ch, left : left + cw].astype(np.float32)).permute(2, 0, 1)[None]
        ref = torch.nn.functional.interpolate(crop, size=(28, 28), mode="bilinear", align_corners=False)
        ref = torch.round(ref)[0].permute(1, 2, 0).numpy()
        assert np.abs(ours - ref).max() <= 1.0  # float rounding at .5 only
        assert (ours != ref).mean() < 0.01


def test_identity_parameters() -> None:
    x = jnp.asarray(_images(5))
    xf = np.asarray(x, np.float32)
    key = jax.random.key(7)
    np.testing.assert_array_equal(np.asarray(A.rotate(key, x, 0)), xf)
    np.testing.assert_array_equal(np.asarray(A.random_resized_crop(key, x, 28, (1.0, 1.0), (1.0, 1.0))), xf)
    np.testing.assert_array_equal(np.asarray(A.pad_crop(key, x, 28, 0)), xf)
    np.testing.assert_array_equal(np.asarray(A.center_crop(x, 28)), xf)
    np.testing.assert_array_equal(np.asarray(A.resize(x, 28)), xf)


# ---------------------------------------------------------------- random_affine, to_rgb


def _rounded_uniform_pmf(m: float, values: np.ndarray) -> np.ndarray:
    """P(round(U(-m, m)) = k): the length of [k - 1/2, k + 1/2] inside [-m, m], over 2m."""
    lo, hi = np.maximum(values - 0.5, -m), np.minimum(values + 0.5, m)
    return np.clip(hi - lo, 0, None) / (2 * m)


def test_random_affine_params_distribution() -> None:
    h, w, n = 28, 30, 4000
    keys = jax.random.split(jax.random.key(21), n)
    p = np.asarray(
        jax.vmap(lambda k: A.random_affine_params(k, h, w, (-10.0, 10.0), (0.2, 0.3), (0.9, 1.1)))(keys)
    )
    angle, tx, ty, scale = p.T
    assert stats.kstest(angle, stats.uniform(loc=-10, scale=20).cdf).pvalue > 1e-3
    assert stats.kstest(scale, stats.uniform(loc=0.9, scale=0.2).cdf).pvalue > 1e-3
    # translations: round(U(-a*W, a*W)) (x uses the width, y the height), integers in [-6, 6] / [-8, 8]
    for t, m in ((tx, 0.2 * w), (ty, 0.3 * h)):
        assert np.array_equal(t, np.round(t))
        values = np.arange(-9, 10)
        pmf = _rounded_uniform_pmf(m, values.astype(float))
        counts = np.array([(t == v).sum() for v in values])
        assert counts[pmf == 0].sum() == 0
        keep = pmf > 0
        assert stats.chisquare(counts[keep], n * pmf[keep]).pvalue > 1e-3
    # the angle is independent of the translations (separate draws)
    assert abs(np.corrcoef(angle, tx)[0, 1]) < 0.1
    # no translate / scale: zeros and ones
    q = np.asarray(A.random_affine_params(jax.random.key(0), h, w, (-10.0, 10.0)))
    assert q[1] == 0 and q[2] == 0 and q[3] == 1


def test_random_affine_identity_translation_and_direction() -> None:
    x = _images(6, 28, 28, 2, seed=22)
    xf = x.astype(np.float32)
    key = jax.random.key(23)
    np.testing.assert_array_equal(np.asarray(A.random_affine(key, jnp.asarray(x), 0, (0.0, 0.0), (1.0, 1.0))), xf)
    # pure translation: the image moves by (+tx, +ty), zeros come in
    out = np.asarray(A.random_affine(key, jnp.asarray(x), 0, translate=(0.2, 0.2)))
    keys = jax.random.split(key, len(x))
    shifts = set()
    for b in range(len(x)):
        _, tx, ty, _ = np.asarray(A.random_affine_params(keys[b], 28, 28, (0.0, 0.0), (0.2, 0.2))).astype(int)
        ref = np.zeros_like(xf[b])
        ys, xs = slice(max(ty, 0), 28 + min(ty, 0)), slice(max(tx, 0), 28 + min(tx, 0))
        ref[ys, xs] = xf[b, max(-ty, 0) : 28 - max(ty, 0), max(-tx, 0) : 28 - max(tx, 0)]
        np.testing.assert_array_equal(out[b], ref)
        shifts.add((tx, ty))
    assert len(shifts) > 3
    # a positive angle turns clockwise (F.affine), the opposite of rotate
    img = _synthetic(29, 29)[None, :, :, None]
    turned = np.asarray(A.random_affine(key, jnp.asarray(img), (90.0, 90.0)))[0, ..., 0]
    np.testing.assert_array_equal(turned, np.rot90(img[0, ..., 0], k=-1).astype(np.float32))


def test_random_affine_matches_torchvision_grid() -> None:
    """Against torchvision's inverse affine matrix (center 0 in centred coordinates, shear 0) through
    grid_sample, at the parameters the op drew."""
    img = _images(3, 28, 32, 1, seed=24)
    key = jax.random.key(25)
    deg, tr, sc = (-10.0, 10.0), (0.2, 0.2), (0.8, 1.2)
    ours = np.asarray(A.random_affine(key, jnp.asarray(img), deg, tr, sc))
    keys = jax.random.split(key, len(img))
    h, w = img.shape[1:3]
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    xc, yc = xx - (w - 1) / 2, yy - (h - 1) / 2  # torchvision's centred base grid
    for b in range(len(img)):
        angle, tx, ty, s = np.asarray(A.random_affine_params(keys[b], h, w, deg, tr, sc), np.float64)
        r = math.radians(angle)
        m = np.array([math.cos(r), math.sin(r), 0.0, -math.sin(r), math.cos(r), 0.0]) / s
        m[2] += m[0] * -tx + m[1] * -ty
        m[5] += m[3] * -tx + m[4] * -ty
        sx = m[0] * xc + m[1] * yc + m[2] + (w - 1) / 2
        sy = m[3] * xc + m[4] * yc + m[5] + (h - 1) / 2
        ref = _torch_grid_sample(img[b], sx, sy, "nearest")
        assert (ours[b] != ref).mean() < 0.01  # only exact rounding ties may differ


def test_to_rgb_exact_and_pipeline_position() -> None:
    x1 = _images(4, 9, 11, 1, seed=26)
    x3 = _images(4, 9, 11, 3, seed=27)
    np.testing.assert_array_equal(np.asarray(A.to_rgb(jnp.asarray(x1))), np.repeat(x1, 3, axis=-1))
    assert A.to_rgb(jnp.asarray(x1)).dtype == jnp.uint8
    np.testing.assert_array_equal(np.asarray(A.to_rgb(jnp.asarray(x3))), x3)
    with pytest.raises(ValueError, match="to_rgb needs 1- or 3-channel"):
        A.to_rgb(jnp.zeros((2, 4, 4, 2), jnp.uint8))
    key = jax.random.key(28)
    grey = np.asarray(jax.jit(A.build("rotate(10)|pad_crop(8, 2)|normalize(0.5, 0.5)"))(key, jnp.asarray(x1)))
    for spec in ("to_rgb|rotate(10)|pad_crop(8, 2)|normalize(0.5, 0.5)", "rotate(10)|pad_crop(8, 2)|to_rgb|normalize(0.5, 0.5)"):
        out = np.asarray(jax.jit(A.build(spec))(key, jnp.asarray(x1)))
        np.testing.assert_array_equal(out, np.repeat(grey, 3, axis=-1))
    np.testing.assert_allclose(np.asarray(A.build("to_rgb")(None, jnp.asarray(x3))), x3 / np.float32(255), rtol=1e-6)
    per_channel = np.asarray(A.build("to_rgb|normalize((0.1, 0.2, 0.3), (0.5, 0.5, 0.5))")(None, jnp.asarray(x1)))
    np.testing.assert_allclose(per_channel, (x1 / np.float32(255) - np.array([0.1, 0.2, 0.3], np.float32)) / 0.5, rtol=1e-6, atol=1e-6)
    with pytest.raises(ValueError, match="to_rgb needs 1- or 3-channel"):
        A.build("to_rgb")(None, jnp.zeros((1, 4, 4, 2), jnp.uint8))


# ---------------------------------------------------------------- pad crop, flips, resize


def test_pad_crop_is_a_shifted_window_of_the_zero_padded_image() -> None:
    x = _images(64, 32, 32, 3, seed=8)
    out = np.asarray(A.pad_crop(jax.random.key(8), jnp.asarray(x), 32, 4))
    padded = np.pad(x, ((0, 0), (4, 4), (4, 4), (0, 0))).astype(np.float32)
    offsets = set()
    for b in range(len(x)):
        hits = [(i, j) for i in range(9) for j in range(9) if np.array_equal(padded[b, i : i + 32, j : j + 32], out[b])]
        assert hits, f"example {b} is not a window of the padded image"
        offsets.add(hits[0])
    assert len(offsets) > 20  # offsets vary over the 81 possibilities


def test_flips_exact_and_rate() -> None:
    x = jnp.asarray(_images(8, 7, 9, 2))
    key = jax.random.key(9)
    np.testing.assert_array_equal(np.asarray(A.hflip(key, x, 1.0)), np.asarray(x)[:, :, ::-1].astype(np.float32))
    np.testing.assert_array_equal(np.asarray(A.vflip(key, x, 1.0)), np.asarray(x)[:, ::-1].astype(np.float32))
    np.testing.assert_array_equal(np.asarray(A.hflip(key, x, 0.0)), np.asarray(x, np.float32))
    many = jnp.asarray(np.tile(np.arange(4, dtype=np.uint8)[None, None, :, None], (4000, 1, 1, 1)))
    out = np.asarray(A.hflip(jax.random.key(10), many))
    flipped = out[:, 0, 0, 0] == 3
    assert np.all(flipped | (out[:, 0, 0, 0] == 0))
    assert abs(flipped.mean() - 0.5) < 4 * math.sqrt(0.25 / 4000)


def test_rotation_angle_uniform() -> None:
    keys = jax.random.split(jax.random.key(11), 4000)
    angles = np.asarray(jax.vmap(lambda k: A.rotation_angle(k, (-10.0, 10.0)))(keys))
    assert angles.min() >= -10 and angles.max() <= 10
    assert stats.kstest(angles, stats.uniform(loc=-10, scale=20).cdf).pvalue > 1e-3


def test_resize_shapes_and_constant() -> None:
    x = jnp.full((2, 12, 20, 3), 77, jnp.uint8)
    y = A.resize(x, 6)  # shorter edge → 6, torchvision: (6, int(6 * 20 / 12) = 10)
    assert y.shape == (2, 6, 10, 3)
    np.testing.assert_array_equal(np.asarray(y), 77.0)
    assert A.center_crop(x, (8, 8)).shape == (2, 8, 8, 3)


# ---------------------------------------------------------------- pipelines


SPECS = [
    "rotate(10)|random_resized_crop(28, scale=(0.95, 1.0))|normalize(0.5, 0.5)",
    "perspective(0.5, p=0.5)|rotate(10)|normalize(0.1307, 0.3081)",
    "pad_crop(28, 4)|hflip|vflip",
]


@pytest.mark.parametrize("spec", SPECS)
def test_pipeline_jit_shapes_determinism(spec: str) -> None:
    x = jnp.asarray(_images(6))
    fn = jax.jit(A.build(spec))
    a, b = fn(jax.random.key(0), x), fn(jax.random.key(0), x)
    c = fn(jax.random.key(1), x)
    assert a.shape == (6, 28, 28, 1) and a.dtype == jnp.float32
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert not np.array_equal(np.asarray(a), np.asarray(c))
    # examples get different parameters
    assert np.asarray(fn(jax.random.key(0), jnp.repeat(x[:1], 4, 0))).std(0).max() > 0


def test_pipeline_normalize_and_scale() -> None:
    x = jnp.asarray(_images(3, 8, 8, 3))
    xf = np.asarray(x, np.float32) / 255.0
    np.testing.assert_allclose(np.asarray(A.build("")(None, x)), xf, rtol=1e-6)
    mean, std = (0.507, 0.487, 0.441), (0.267, 0.256, 0.276)
    got = A.build(f"normalize({mean}, {std})")(None, x)
    np.testing.assert_allclose(np.asarray(got), (xf - mean) / np.array(std), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.asarray(A.normalize(x, mean, std)), np.asarray(got), rtol=1e-6)
    assert A.eval_spec("rotate(10)|normalize(0.5, 0.5)") == "normalize(0.5, 0.5)"
    assert A.eval_spec("pad_crop(32, 4)|hflip") == ""


def test_pipeline_output_size_change_and_lazy_composition() -> None:
    x = jnp.asarray(_images(4, 32, 32, 3))
    y = jax.jit(A.build("random_resized_crop((20, 24))|perspective(p=1.0)|rotate(15)|hflip|to_float"))(jax.random.key(2), x)
    assert y.shape == (4, 20, 24, 3)
    # Lazily composed = materialising after each op (same keys): one gather equals the stepwise result.
    ops = [A._stage_op(op) for op in A.parse("perspective(p=1.0)|rotate(15)|random_resized_crop(28)|hflip")]

    @jax.jit
    def both(img: jax.Array) -> tuple[jax.Array, jax.Array]:
        keys = jax.random.split(jax.random.key(3), len(ops))
        lazy, eager = A._from_array(img), A._from_array(img)
        for k, op in zip(keys, ops, strict=True):
            lazy = op(k, lazy)
            eager = A._from_array(A._materialize(op(k, eager)))
        return A._materialize(lazy), A._materialize(eager)

    lazy, eager = both(jnp.asarray(_images(1, 28, 28, 1, seed=3)[0]))
    np.testing.assert_array_equal(np.asarray(lazy), np.asarray(eager))


def test_bf16_safe() -> None:
    spec = SPECS[0]
    x = jnp.asarray(_images(4))
    f32 = A.build(spec)(jax.random.key(0), x)
    bf = A.build(spec, dtype=jnp.bfloat16)(jax.random.key(0), x)
    assert bf.dtype == jnp.bfloat16
    np.testing.assert_allclose(np.asarray(bf, np.float32), np.asarray(f32), rtol=1e-2, atol=1e-2)
    # integer-valued bf16 images (exact up to 256) give the same result as uint8
    from_bf = A.build(spec)(jax.random.key(0), x.astype(jnp.bfloat16))
    np.testing.assert_array_equal(np.asarray(from_bf), np.asarray(f32))


@pytest.mark.parametrize(
    ("spec", "match"),
    [
        ("blur(3)", "unknown augmentation op 'blur'"),
        ("rotate()", "missing required argument"),
        ("rotate(10, bar=1)", "unknown argument 'bar'"),
        ("rotate(__import__('os'))", "must be literals"),
        ("perspective(1.5)", "distortion_scale"),
        ("hflip(p=2)", "probability"),
        ("random_resized_crop(28, scale=(1.0, 0.5))", "scale"),
        ("pad_crop(-3)", "size"),
        ("normalize(0.5, 0.5)|rotate(10)", "must be the last op"),
        ("normalize(0.5, 0)", "std must be positive"),
        ("rotate[3]", "name or name"),
        ("random_affine(-1)", "random_affine: degrees"),
        ("random_affine(10, translate=(1.5, 0.1))", "translate fractions"),
        ("random_affine(10, scale=(0, 1))", "scale"),
    ],
)
def test_bad_specs(spec: str, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        A.build(spec)


def test_bad_calls() -> None:
    with pytest.raises(ValueError, match="PRNG key"):
        A.build("rotate(10)")(None, jnp.zeros((1, 4, 4, 1), jnp.uint8))
    with pytest.raises(ValueError, match="channels"):
        A.build("normalize((0.1, 0.2), (1, 1))")(None, jnp.zeros((1, 4, 4, 3), jnp.uint8))
    with pytest.raises(ValueError, match="B, H, W, C"):
        A.build("")(None, jnp.zeros((4, 4, 1), jnp.uint8))
    with pytest.raises(ValueError, match="no default augmentation"):
        A.default_spec("not_a_dataset")


# ---------------------------------------------------------------- show_augmentations, benchmark


def test_show_augmentations_writes_png(tmp_path, monkeypatch) -> None:
    import spinal_jax.data as data_pkg

    calls = []

    def fake_load_arrays(name, split, data_dir=None):
        calls.append((name, split, data_dir))
        return _images(20, 28, 28, 1, seed=12), np.zeros(20, np.int32)

    monkeypatch.setattr(data_pkg, "load_arrays", fake_load_arrays, raising=False)
    out = tmp_path / "sub" / "aug.png"
    A.show_augmentations("fashion_mnist", out, num_examples=3, num_draws=2, data_dir="/x")
    assert calls == [("fashion_mnist", "train", "/x")]
    data = out.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert [p.name for p in out.parent.iterdir()] == ["aug.png"]  # no temp files left
    with pytest.raises(ValueError, match="unknown augmentation op"):
        A.show_augmentations("fashion_mnist", out, spec="nope")


def test_bench_quick(tmp_path) -> None:
    spec = importlib.util.spec_from_file_location("bench_augment", REPO / "experiments" / "bench_augment.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    mod.main(["--quick", "--out", str(tmp_path)])
    res = json.loads((tmp_path / "bench_augment.json").read_text())
    assert res["results"] and all(r["ms_per_step"] > 0 for r in res["results"])
    assert (tmp_path / "bench_augment.md").read_text().startswith("#")
