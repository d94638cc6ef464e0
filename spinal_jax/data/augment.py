"""On-device image augmentation in pure JAX, behaving like the original's torchvision transforms.

A pipeline is a spec string of ops joined by ``|``, e.g.
``"rotate(10)|random_resized_crop(28, scale=(0.95, 1.0))|normalize(0.5, 0.5)"``.
``build(spec)`` returns ``fn(key, images_uint8_nhwc) -> float32 nhwc`` that is jittable, vmapped over
the batch (one key per example, split from ``key``) and deterministic for a given key.

Conventions (torchvision's tensor path, which follows PIL's pixel grid):
- pixel ``i`` covers ``[i, i+1)``; rotation is about the centre ``((W-1)/2, (H-1)/2)`` in index coordinates,
  a positive angle turns the image counter-clockwise;
- perspective coefficients are applied to ``(x + 0.5, y + 0.5)`` (PIL's convention) and map output → input;
- warps fill with 0; a bilinear warp multiplies by the bilinearly-sampled in-bounds mask, as torchvision does
  for a given ``fill``; nearest uses round-half-to-even of the source index, as ``grid_sample`` does;
- resampled results are rounded to integers, as torchvision returns uint8 for uint8 input;
- the crop of ``random_resized_crop`` is resized by bilinear sampling with edge clamping inside the crop
  (``F.interpolate(align_corners=False)``); torchvision's antialias only matters when a crop is *shrunk*,
  which the grid's small-image pipelines never do (``resize`` itself uses an antialiased resize);
- checked against torchvision 0.26 at fixed parameters (experiments/check_augment_torchvision.py):
  identical to the tensor path for rotate and perspective, within 1 grey level on 0.3% of pixels for the
  resized crop (torch's uint8 resize kernel). The original ran the transforms on PIL images: PIL's rotate
  matches except rounding ties (0.06% of pixels), PIL's bilinear perspective differs in ~30% of pixels
  (its own bilinear filter), its resize by ≤ 1 grey level.
All geometric ops share one inverse-map sampler (``_warp``): output pixel grid → source coordinates via an
affine or projective 3×3 matrix → nearest or bilinear gather. Consecutive ops are composed lazily, so a
whole pipeline usually becomes a single gather from the uint8 source.
``to_rgb`` (grey → 3 equal channels, as ImageFolder loads grayscale PNGs) commutes with every op (each acts
on all channels alike, fill 0), so wherever it stands in the spec it is applied once, after the last
gather and before ``normalize``: the warps and resizes gather one channel instead of three.
"""

from __future__ import annotations

import ast
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from spinal_jax.files import atomic_writer

__all__ = [
    "DEFAULT_TRAIN_AUGMENT",
    "Op",
    "build",
    "center_crop",
    "default_spec",
    "eval_spec",
    "hflip",
    "normalize",
    "pad_crop",
    "parse",
    "perspective",
    "perspective_coefficients",
    "perspective_matrix",
    "perspective_params",
    "random_affine",
    "random_affine_matrix",
    "random_affine_params",
    "random_resized_crop",
    "resize",
    "resized_crop_fallback",
    "resized_crop_params",
    "rotate",
    "rotation_angle",
    "rotation_matrix",
    "show_augmentations",
    "show_augmentations_arrays",
    "to_rgb",
    "vflip",
]

Pipeline = Callable[[jax.Array, jax.Array], jax.Array]

# The original's train augmentations (ORIGINAL.md §2), without normalisation (configs add that).
DEFAULT_TRAIN_AUGMENT: dict[str, str] = {
    "fashion_mnist": "rotate(10)|random_resized_crop(28, scale=(0.95, 1.0))",
    "mnist": "perspective(0.5, p=0.5)|rotate(10)",
    "kmnist": "perspective(0.5, p=0.5)|rotate(10)",
    "qmnist": "perspective(0.5, p=0.5)|rotate(10)",
    "emnist/digits": "perspective(0.5, p=0.5)|rotate(10)",
    "emnist/letters": "perspective(0.5, p=0.5)|rotate(10)",
    "emnist/balanced": "perspective(0.5, p=0.5)|rotate(10)",
    "cifar10": "pad_crop(32, 4)|hflip",
    "cifar100": "pad_crop(32, 4)|hflip",
    "digits": "",
}


def default_spec(name: str) -> str:
    """The original's train augmentation for dataset ``name`` (no normalisation)."""
    if name not in DEFAULT_TRAIN_AUGMENT:
        raise ValueError(
            f"no default augmentation for dataset {name!r}; known: {sorted(DEFAULT_TRAIN_AUGMENT)}. "
            "Pass an explicit spec string instead."
        )
    return DEFAULT_TRAIN_AUGMENT[name]


# ----------------------------------------------------------------------------------------------
# The sampler. A "stage" is a lazy image: shape (H, W) plus sample(yi, xi) -> (..., C) float32 for
# integer index arrays that are guaranteed in bounds. cost = source gathers per output pixel.
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Stage:
    height: int
    width: int
    sample: Callable[[jax.Array, jax.Array], jax.Array]
    cost: int = 1


def _from_array(img: jax.Array) -> _Stage:
    h, w = img.shape[:2]
    return _Stage(h, w, lambda yi, xi: img[yi, xi].astype(jnp.float32), 1)


def _materialize(stage: _Stage) -> jax.Array:
    yi, xi = jnp.meshgrid(
        jnp.arange(stage.height, dtype=jnp.int32), jnp.arange(stage.width, dtype=jnp.int32), indexing="ij"
    )
    return stage.sample(yi, xi)


def _source_coords(matrix: jax.Array, out_h: int, out_w: int, offset: float) -> tuple[jax.Array, jax.Array]:
    """Source (y, x) index coordinates of the output grid under a 3×3 output→input matrix.

    The matrix acts on ``(x + offset, y + offset, 1)``; the result is shifted back by ``offset``.
    """
    y = jnp.arange(out_h, dtype=jnp.float32)[:, None] + offset
    x = jnp.arange(out_w, dtype=jnp.float32)[None, :] + offset
    m = matrix.astype(jnp.float32)
    den = m[2, 0] * x + m[2, 1] * y + m[2, 2]
    sx = (m[0, 0] * x + m[0, 1] * y + m[0, 2]) / den - offset
    sy = (m[1, 0] * x + m[1, 1] * y + m[1, 2]) / den - offset
    return sy, sx


def _warp(
    stage: _Stage,
    matrix: jax.Array,
    out_hw: tuple[int, int],
    interpolation: str,
    border: str = "zeros",
    box: tuple[jax.Array, jax.Array, jax.Array, jax.Array] | None = None,
    offset: float = 0.5,
) -> _Stage:
    """The one inverse-map sampler behind every geometric op.

    ``border="zeros"``: fill 0 outside the image (bilinear also multiplies by the sampled in-bounds mask,
    as torchvision does for a fill value). ``border="clamp"``: clamp source coordinates into ``box``
    = (top, left, height, width), as a crop followed by ``F.interpolate`` does.
    """
    if interpolation == "bilinear" and stage.cost * 4 > 16:
        stage = _from_array(_materialize(stage))
    out_h, out_w = out_hw
    h, w = stage.height, stage.width
    sy, sx = _source_coords(matrix, out_h, out_w, offset)
    prev = stage.sample

    if border == "clamp":
        top, left, bh, bw = (jnp.asarray(v, jnp.float32) for v in box)  # type: ignore[union-attr]
        sy = jnp.clip(sy, top, top + bh - 1.0)
        sx = jnp.clip(sx, left, left + bw - 1.0)
        ylim, xlim = top + bh - 1.0, left + bw - 1.0
    else:
        ylim, xlim = float(h - 1), float(w - 1)

    if interpolation == "nearest":
        # grid_sample rounds half to even; coordinates are small, so int conversion is exact.
        def sample(yi: jax.Array, xi: jax.Array) -> jax.Array:
            ny = jnp.round(sy[yi, xi])
            nx = jnp.round(sx[yi, xi])
            valid = (ny >= 0) & (ny <= h - 1) & (nx >= 0) & (nx <= w - 1)
            iy = jnp.clip(ny, 0, h - 1).astype(jnp.int32)
            ix = jnp.clip(nx, 0, w - 1).astype(jnp.int32)
            return jnp.where(valid[..., None], prev(iy, ix), 0.0)

        return _Stage(out_h, out_w, sample, stage.cost)

    if interpolation != "bilinear":
        raise ValueError(f"interpolation must be 'nearest' or 'bilinear', got {interpolation!r}")

    def sample(yi: jax.Array, xi: jax.Array) -> jax.Array:
        py, px = sy[yi, xi], sx[yi, xi]
        y0, x0 = jnp.floor(py), jnp.floor(px)
        fy, fx = py - y0, px - x0
        acc = 0.0
        mask = 0.0
        for dy, wy in ((0.0, 1.0 - fy), (1.0, fy)):
            for dx, wx in ((0.0, 1.0 - fx), (1.0, fx)):
                ty, tx = y0 + dy, x0 + dx
                if border == "clamp":
                    valid = jnp.ones_like(ty, dtype=bool)
                    ty, tx = jnp.minimum(ty, ylim), jnp.minimum(tx, xlim)
                else:
                    valid = (ty >= 0) & (ty <= h - 1) & (tx >= 0) & (tx <= w - 1)
                wgt = jnp.where(valid, wy * wx, 0.0)
                iy = jnp.clip(ty, 0, h - 1).astype(jnp.int32)
                ix = jnp.clip(tx, 0, w - 1).astype(jnp.int32)
                acc = acc + wgt[..., None] * prev(iy, ix)
                mask = mask + wgt
        if border == "zeros":
            acc = acc * mask[..., None]
        return jnp.round(acc)  # torchvision returns uint8 for uint8 input

    return _Stage(out_h, out_w, sample, stage.cost * 4)


def _eye() -> jax.Array:
    return jnp.eye(3, dtype=jnp.float32)


# ----------------------------------------------------------------------------------------------
# Parameter samplers (per example; vmap them for a batch). Each mirrors torchvision's get_params.
# ----------------------------------------------------------------------------------------------


def rotation_angle(key: jax.Array, degrees: tuple[float, float]) -> jax.Array:
    """Angle in degrees ~ U(degrees[0], degrees[1]) (RandomRotation.get_params)."""
    return jax.random.uniform(key, (), jnp.float32, degrees[0], degrees[1])


def rotation_matrix(angle_deg: jax.Array, height: int, width: int) -> jax.Array:
    """Output→input index-coordinate matrix of a counter-clockwise rotation about the image centre."""
    a = jnp.deg2rad(jnp.asarray(angle_deg, jnp.float32))
    c, s = jnp.cos(a), jnp.sin(a)
    cx, cy = (width - 1) / 2.0, (height - 1) / 2.0
    # in = R (out - centre) + centre, R = [[c, -s], [s, c]] in (x, y) with y pointing down.
    return jnp.array(
        [[c, -s, cx - c * cx + s * cy], [s, c, cy - s * cx - c * cy], [0.0, 0.0, 1.0]], jnp.float32
    )


def random_affine_params(
    key: jax.Array,
    height: int,
    width: int,
    degrees: tuple[float, float],
    translate: tuple[float, float] | None = None,
    scale: tuple[float, float] | None = None,
) -> jax.Array:
    """(angle, tx, ty, scale) float32 of RandomAffine.get_params (no shear): angle ~ U(degrees),
    tx = round(U(-a·W, a·W)), ty = round(U(-b·H, b·H)) for ``translate`` = (a, b) (Python's round: half to
    even, as ``jnp.round``), scale ~ U(scale) (1 when None)."""
    k_angle, k_tx, k_ty, k_scale = jax.random.split(key, 4)
    angle = rotation_angle(k_angle, degrees)
    if translate is None:
        tx = ty = jnp.zeros((), jnp.float32)
    else:
        max_dx, max_dy = translate[0] * width, translate[1] * height
        tx = jnp.round(jax.random.uniform(k_tx, (), jnp.float32, -max_dx, max_dx))
        ty = jnp.round(jax.random.uniform(k_ty, (), jnp.float32, -max_dy, max_dy))
    s = jnp.ones((), jnp.float32) if scale is None else jax.random.uniform(k_scale, (), jnp.float32, *scale)
    return jnp.stack([angle, tx, ty, s])


def random_affine_matrix(params: jax.Array, height: int, width: int) -> jax.Array:
    """Output→input index-coordinate matrix of torchvision's ``F.affine(angle, (tx, ty), scale)`` (no shear):
    ``in = A (out - c - t) + c`` with A = [[cos, sin], [-sin, cos]] / scale and c the image centre. Note
    F.affine turns *clockwise* for a positive angle (F.rotate counter-clockwise): affine(a) = rotate(-a)."""
    angle, tx, ty, s = (jnp.asarray(v, jnp.float32) for v in params)
    a = jnp.deg2rad(angle)
    c, sn = jnp.cos(a) / s, jnp.sin(a) / s
    cx, cy = (width - 1) / 2.0, (height - 1) / 2.0
    px, py = cx + tx, cy + ty
    return jnp.array(
        [[c, sn, cx - c * px - sn * py], [-sn, c, cy + sn * px - c * py], [0.0, 0.0, 1.0]], jnp.float32
    )


def perspective_params(key: jax.Array, height: int, width: int, distortion_scale: float) -> jax.Array:
    """End points (4, 2) as (x, y) integers for TL, TR, BR, BL (RandomPerspective.get_params)."""
    bh = int(distortion_scale * (height // 2)) + 1
    bw = int(distortion_scale * (width // 2)) + 1
    k = jax.random.split(key, 8)
    ri = jax.random.randint
    pts = [
        (ri(k[0], (), 0, bw), ri(k[1], (), 0, bh)),
        (ri(k[2], (), width - bw, width), ri(k[3], (), 0, bh)),
        (ri(k[4], (), width - bw, width), ri(k[5], (), height - bh, height)),
        (ri(k[6], (), 0, bw), ri(k[7], (), height - bh, height)),
    ]
    return jnp.array(pts, jnp.int32)


def _square_to_quad(q: jax.Array) -> jax.Array:
    """3×3 projective map of the unit square (0,0),(1,0),(1,1),(0,1) onto quad q (4, 2) (Heckbert)."""
    x0, x1, x2, x3 = q[0, 0], q[1, 0], q[2, 0], q[3, 0]
    y0, y1, y2, y3 = q[0, 1], q[1, 1], q[2, 1], q[3, 1]
    dx1, dx2, dx3 = x1 - x2, x3 - x2, x0 - x1 + x2 - x3
    dy1, dy2, dy3 = y1 - y2, y3 - y2, y0 - y1 + y2 - y3
    den = dx1 * dy2 - dx2 * dy1
    g = (dx3 * dy2 - dx2 * dy3) / den
    hh = (dx1 * dy3 - dx3 * dy1) / den
    return jnp.array(
        [
            [x1 - x0 + g * x1, x3 - x0 + hh * x3, x0],
            [y1 - y0 + g * y1, y3 - y0 + hh * y3, y0],
            [g, hh, 1.0],
        ]
    )


def _adjugate(m: jax.Array) -> jax.Array:
    c = [[None] * 3 for _ in range(3)]
    for i in range(3):
        for j in range(3):
            r = [k for k in range(3) if k != i]
            s = [k for k in range(3) if k != j]
            minor = m[r[0], s[0]] * m[r[1], s[1]] - m[r[0], s[1]] * m[r[1], s[0]]
            c[j][i] = minor * (1.0 if (i + j) % 2 == 0 else -1.0)  # transpose of cofactors
    return jnp.stack([jnp.stack(row) for row in c])


def perspective_coefficients(endpoints: jax.Array, height: int, width: int) -> jax.Array:
    """Output→input 3×3 matrix (normalised so [2, 2] = 1) that maps ``endpoints`` onto the corners
    (0,0), (W-1,0), (W-1,H-1), (0,H-1): torchvision's ``_get_perspective_coeffs``, in closed form."""
    q = endpoints.astype(jnp.float32)
    to_rect = jnp.diag(jnp.array([width - 1.0, height - 1.0, 1.0], jnp.float32))
    m = to_rect @ _adjugate(_square_to_quad(q))
    return m / m[2, 2]


def perspective_matrix(key: jax.Array, height: int, width: int, distortion_scale: float, p: float) -> jax.Array:
    """RandomPerspective's per-example matrix: with probability ``p`` the coefficients of random end
    points, else the identity (applied to pixel coordinates + 0.5, PIL's convention)."""
    k_apply, k_pts = jax.random.split(key)
    apply = jax.random.uniform(k_apply, ()) < p
    m = perspective_coefficients(perspective_params(k_pts, height, width, distortion_scale), height, width)
    return jnp.where(apply, m, _eye())


def resized_crop_fallback(height: int, width: int, ratio: tuple[float, float]) -> tuple[int, int]:
    """(h, w) of RandomResizedCrop's centre-crop fallback when no try fits (torchvision's rule; plain
    Python, shared with the host path :mod:`spinal_jax.data.preprocess`)."""
    in_ratio = width / height
    if in_ratio < min(ratio):
        return round(width / min(ratio)), width
    if in_ratio > max(ratio):
        return height, round(height * max(ratio))
    return height, width


def resized_crop_params(
    key: jax.Array,
    height: int,
    width: int,
    scale: tuple[float, float],
    ratio: tuple[float, float],
    attempts: int = 10,
) -> jax.Array:
    """(top, left, h, w) int32 of RandomResizedCrop.get_params: ``attempts`` vectorised tries with
    target area ~ U(scale)·area and log-uniform aspect ratio; the first try that fits wins, else the
    centre-crop fallback."""
    area = float(height * width)
    k_scale, k_ratio, k_i, k_j = jax.random.split(key, 4)
    s = jax.random.uniform(k_scale, (attempts,), jnp.float32, scale[0], scale[1])
    logr = jax.random.uniform(k_ratio, (attempts,), jnp.float32, math.log(ratio[0]), math.log(ratio[1]))
    r = jnp.exp(logr)
    target = area * s
    w = jnp.round(jnp.sqrt(target * r)).astype(jnp.int32)
    h = jnp.round(jnp.sqrt(target / r)).astype(jnp.int32)
    ok = (w > 0) & (w <= width) & (h > 0) & (h <= height)
    first = jnp.argmax(ok)
    any_ok = ok[first]
    fh, fw = resized_crop_fallback(height, width, ratio)
    ch = jnp.where(any_ok, h[first], fh)
    cw = jnp.where(any_ok, w[first], fw)
    top = jax.random.randint(k_i, (), 0, height - ch + 1)
    left = jax.random.randint(k_j, (), 0, width - cw + 1)
    top = jnp.where(any_ok, top, (height - fh) // 2)
    left = jnp.where(any_ok, left, (width - fw) // 2)
    return jnp.stack([top, left, ch, cw]).astype(jnp.int32)


# ----------------------------------------------------------------------------------------------
# Ops on one example's stage. Signature: op(key, stage) -> stage. Public wrappers below work on
# batches of uint8 / float images.
# ----------------------------------------------------------------------------------------------


def _op_rotate(degrees: tuple[float, float], interpolation: str) -> Callable[[jax.Array, _Stage], _Stage]:
    def op(key: jax.Array, st: _Stage) -> _Stage:
        m = rotation_matrix(rotation_angle(key, degrees), st.height, st.width)
        return _warp(st, m, (st.height, st.width), interpolation, offset=0.0)

    return op


def _op_affine(
    degrees: tuple[float, float],
    translate: tuple[float, float] | None,
    scale: tuple[float, float] | None,
    interpolation: str,
) -> Callable[[jax.Array, _Stage], _Stage]:
    def op(key: jax.Array, st: _Stage) -> _Stage:
        params = random_affine_params(key, st.height, st.width, degrees, translate, scale)
        return _warp(st, random_affine_matrix(params, st.height, st.width), (st.height, st.width), interpolation, offset=0.0)

    return op


def _op_perspective(distortion: float, p: float, interpolation: str) -> Callable[[jax.Array, _Stage], _Stage]:
    def op(key: jax.Array, st: _Stage) -> _Stage:
        m = perspective_matrix(key, st.height, st.width, distortion, p)
        return _warp(st, m, (st.height, st.width), interpolation, offset=0.5)

    return op


def _op_rrc(size: tuple[int, int], scale: tuple[float, float], ratio: tuple[float, float]) -> Callable:
    def op(key: jax.Array, st: _Stage) -> _Stage:
        return _resized_crop(st, resized_crop_params(key, st.height, st.width, scale, ratio), size)

    return op


def _resized_crop(st: _Stage, params: jax.Array, size: tuple[int, int]) -> _Stage:
    """Crop (top, left, h, w) then bilinear resize to ``size`` (torchvision's F.resized_crop)."""
    top, left, ch, cw = jnp.asarray(params).astype(jnp.float32)
    sy, sx = ch / size[0], cw / size[1]
    # (x_out + 0.5) * scale - 0.5 + left, as F.interpolate(align_corners=False) on the crop.
    m = jnp.array([[sx, 0.0, left + 0.5 * sx - 0.5], [0.0, sy, top + 0.5 * sy - 0.5], [0.0, 0.0, 1.0]])
    return _warp(st, m, size, "bilinear", border="clamp", box=(top, left, ch, cw), offset=0.0)


def _op_pad_crop(size: tuple[int, int], padding: int) -> Callable:
    def op(key: jax.Array, st: _Stage) -> _Stage:
        ki, kj = jax.random.split(key)
        i = jax.random.randint(ki, (), 0, st.height + 2 * padding - size[0] + 1)
        j = jax.random.randint(kj, (), 0, st.width + 2 * padding - size[1] + 1)
        m = jnp.array([[1.0, 0.0, j - padding], [0.0, 1.0, i - padding], [0.0, 0.0, 1.0]], jnp.float32)
        return _warp(st, m, size, "nearest", offset=0.0)

    return op


def _op_flip(axis: int, p: float) -> Callable:
    def op(key: jax.Array, st: _Stage) -> _Stage:
        flip = jax.random.uniform(key, ()) < p
        prev = st.sample
        if axis == 1:

            def sample(yi: jax.Array, xi: jax.Array) -> jax.Array:
                return prev(yi, jnp.where(flip, st.width - 1 - xi, xi))
        else:

            def sample(yi: jax.Array, xi: jax.Array) -> jax.Array:
                return prev(jnp.where(flip, st.height - 1 - yi, yi), xi)

        return _Stage(st.height, st.width, sample, st.cost)

    return op


def _op_center_crop(size: tuple[int, int]) -> Callable:
    def op(key: jax.Array, st: _Stage) -> _Stage:
        del key
        # torchvision: top = int(round((H - th) / 2)); pads with 0 when the crop is larger.
        top = round((st.height - size[0]) / 2.0)
        left = round((st.width - size[1]) / 2.0)
        m = jnp.array([[1.0, 0.0, left], [0.0, 1.0, top], [0.0, 0.0, 1.0]], jnp.float32)
        return _warp(st, m, size, "nearest", offset=0.0)

    return op


def _resize_hw(size: int | tuple[int, int], h: int, w: int) -> tuple[int, int]:
    if isinstance(size, int):  # torchvision: the shorter edge becomes `size`
        if h <= w:
            return size, int(size * w / h)
        return int(size * h / w), size
    return size


def _op_resize(size: int | tuple[int, int]) -> Callable:
    def op(key: jax.Array, st: _Stage) -> _Stage:
        del key
        oh, ow = _resize_hw(size, st.height, st.width)
        if (oh, ow) == (st.height, st.width):
            return st
        img = _materialize(st)
        # Antialiased triangle filter, half-pixel centres: torchvision's Resize(antialias=True).
        out = jax.image.resize(img, (oh, ow, img.shape[-1]), "linear", antialias=True)
        return _from_array(jnp.round(jnp.clip(out, 0.0, 255.0)))

    return op


# ----------------------------------------------------------------------------------------------
# Spec parsing.
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Op:
    """One parsed pipeline op: ``name`` and keyword arguments (after defaults)."""

    name: str
    kwargs: tuple[tuple[str, Any], ...]

    def get(self, key: str) -> Any:
        return dict(self.kwargs)[key]


def _pair(v: Any, name: str, what: str, kind: type = float) -> tuple:
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        return (kind(v), kind(v))
    if isinstance(v, (tuple, list)) and len(v) == 2 and all(isinstance(t, (int, float)) for t in v):
        return (kind(v[0]), kind(v[1]))
    raise ValueError(f"{name}: {what} must be a number or a pair of numbers, got {v!r}")


def _size(v: Any, name: str) -> tuple[int, int]:
    if isinstance(v, int) and not isinstance(v, bool) and v > 0:
        return (v, v)
    if isinstance(v, (tuple, list)) and len(v) == 2 and all(isinstance(t, int) and t > 0 for t in v):
        return (int(v[0]), int(v[1]))
    raise ValueError(f"{name}: size must be a positive int or (height, width), got {v!r}")


def _prob(v: Any, name: str) -> float:
    if not isinstance(v, (int, float)) or isinstance(v, bool) or not 0.0 <= v <= 1.0:
        raise ValueError(f"{name}: p must be a probability in [0, 1], got {v!r}")
    return float(v)


def _interp(v: Any, name: str) -> str:
    if v not in ("nearest", "bilinear"):
        raise ValueError(f"{name}: interpolation must be 'nearest' or 'bilinear', got {v!r}")
    return v


def _channels(v: Any, name: str, what: str) -> tuple[float, ...]:
    vals = (v,) if isinstance(v, (int, float)) and not isinstance(v, bool) else v
    if not isinstance(vals, (tuple, list)) or not vals or not all(isinstance(t, (int, float)) for t in vals):
        raise ValueError(f"{name}: {what} must be a number or a tuple of per-channel numbers, got {v!r}")
    return tuple(float(t) for t in vals)


# name -> (positional parameter names, defaults, validator(kwargs) -> normalised kwargs)
def _degrees(d: Any, name: str) -> tuple[float, float]:
    if isinstance(d, (int, float)) and not isinstance(d, bool):
        if d < 0:
            raise ValueError(f"{name}: degrees must be >= 0 when a single number, got {d!r}")
        return (-float(d), float(d))
    return _pair(d, name, "degrees")


def _v_rotate(k: dict) -> dict:
    return {"degrees": _degrees(k["degrees"], "rotate"), "interpolation": _interp(k["interpolation"], "rotate")}


def _v_affine(k: dict) -> dict:
    out = {"degrees": _degrees(k["degrees"], "random_affine"), "interpolation": _interp(k["interpolation"], "random_affine")}
    t = k["translate"]
    if t is not None:
        t = _pair(t, "random_affine", "translate")
        if not all(0.0 <= v <= 1.0 for v in t):
            raise ValueError(f"random_affine: translate fractions must be in [0, 1], got {t}")
    sc = k["scale"]
    if sc is not None:
        sc = _pair(sc, "random_affine", "scale")
        if not 0 < sc[0] <= sc[1]:
            raise ValueError(f"random_affine: scale must satisfy 0 < min <= max, got {sc}")
    return {**out, "translate": t, "scale": sc}


def _v_perspective(k: dict) -> dict:
    ds = k["distortion_scale"]
    if not isinstance(ds, (int, float)) or isinstance(ds, bool) or not 0.0 <= ds <= 1.0:
        raise ValueError(f"perspective: distortion_scale must be in [0, 1], got {ds!r}")
    return {
        "distortion_scale": float(ds),
        "p": _prob(k["p"], "perspective"),
        "interpolation": _interp(k["interpolation"], "perspective"),
    }


def _v_rrc(k: dict) -> dict:
    scale = _pair(k["scale"], "random_resized_crop", "scale")
    ratio = _pair(k["ratio"], "random_resized_crop", "ratio")
    if not 0 < scale[0] <= scale[1]:
        raise ValueError(f"random_resized_crop: scale must satisfy 0 < min <= max, got {scale}")
    if not 0 < ratio[0] <= ratio[1]:
        raise ValueError(f"random_resized_crop: ratio must satisfy 0 < min <= max, got {ratio}")
    return {"size": _size(k["size"], "random_resized_crop"), "scale": scale, "ratio": ratio}


def _v_pad_crop(k: dict) -> dict:
    pad = k["padding"]
    if not isinstance(pad, int) or isinstance(pad, bool) or pad < 0:
        raise ValueError(f"pad_crop: padding must be an int >= 0, got {pad!r}")
    return {"size": _size(k["size"], "pad_crop"), "padding": pad}


def _v_flip(name: str) -> Callable[[dict], dict]:
    return lambda k: {"p": _prob(k["p"], name)}


def _v_resize(k: dict) -> dict:
    s = k["size"]
    return {"size": s if isinstance(s, int) and not isinstance(s, bool) and s > 0 else _size(s, "resize")}


def _v_normalize(k: dict) -> dict:
    mean = _channels(k["mean"], "normalize", "mean")
    std = _channels(k["std"], "normalize", "std")
    if any(s <= 0 for s in std):
        raise ValueError(f"normalize: std must be positive, got {std}")
    return {"mean": mean, "std": std}


_OPS: dict[str, tuple[tuple[str, ...], dict[str, Any], Callable[[dict], dict]]] = {
    "rotate": (("degrees", "interpolation"), {"interpolation": "nearest"}, _v_rotate),
    "random_affine": (
        ("degrees", "translate", "scale", "interpolation"),
        {"translate": None, "scale": None, "interpolation": "nearest"},
        _v_affine,
    ),
    "perspective": (
        ("distortion_scale", "p", "interpolation"),
        {"distortion_scale": 0.5, "p": 0.5, "interpolation": "bilinear"},
        _v_perspective,
    ),
    "random_resized_crop": (("size", "scale", "ratio"), {"scale": (0.08, 1.0), "ratio": (3 / 4, 4 / 3)}, _v_rrc),
    "pad_crop": (("size", "padding"), {"padding": 0}, _v_pad_crop),
    "hflip": (("p",), {"p": 0.5}, _v_flip("hflip")),
    "vflip": (("p",), {"p": 0.5}, _v_flip("vflip")),
    "resize": (("size",), {}, _v_resize),
    "center_crop": (("size",), {}, lambda k: {"size": _size(k["size"], "center_crop")}),
    "normalize": (("mean", "std"), {}, _v_normalize),
    "to_float": ((), {}, lambda k: {}),
    "to_rgb": ((), {}, lambda k: {}),
}
_ALIASES = {"random_crop": "pad_crop", "rotation": "rotate", "random_rotation": "rotate", "affine": "random_affine"}
_FINAL = ("normalize", "to_float")
_RANDOM = ("rotate", "random_affine", "perspective", "random_resized_crop", "pad_crop", "hflip", "vflip")


def _parse_one(text: str) -> Op:
    src = text.strip()
    try:
        node = ast.parse(src, mode="eval").body
    except SyntaxError as e:
        raise ValueError(f"augmentation op {src!r} is not of the form name or name(args): {e.msg}") from None
    if isinstance(node, ast.Name):
        name, args, kws = node.id, [], []
    elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
        name, args, kws = node.func.id, node.args, node.keywords
    else:
        raise ValueError(f"augmentation op {src!r} is not of the form name or name(args)")
    name = _ALIASES.get(name, name)
    if name not in _OPS:
        raise ValueError(f"unknown augmentation op {name!r} in {src!r}; known ops: {sorted(_OPS)}")
    params, defaults, validate = _OPS[name]
    if len(args) > len(params):
        raise ValueError(f"{name}: takes at most {len(params)} positional arguments {params}, got {len(args)}")
    values: dict[str, Any] = dict(defaults)
    try:
        for pname, a in zip(params, args, strict=False):
            values[pname] = ast.literal_eval(a)
        for kw in kws:
            if kw.arg is None or kw.arg not in params:
                raise ValueError(f"{name}: unknown argument {kw.arg!r}; arguments: {params}")
            values[kw.arg] = ast.literal_eval(kw.value)
    except (ValueError, SyntaxError) as e:
        if isinstance(e, ValueError) and str(e).startswith(name):
            raise
        raise ValueError(f"{name}: arguments must be literals (numbers, strings, tuples) in {src!r}") from None
    missing = [p for p in params if p not in values]
    if missing:
        raise ValueError(f"{name}: missing required argument(s) {missing} in {src!r}")
    return Op(name, tuple(sorted(validate(values).items())))


def parse(spec: str) -> list[Op]:
    """Parse a pipeline spec ``"op(args)|op|..."`` safely (``ast``, no eval) into ops."""
    if not isinstance(spec, str):
        raise ValueError(f"augmentation spec must be a string, got {type(spec).__name__}")
    ops = [_parse_one(part) for part in _parts(spec)]
    for i, op in enumerate(ops):
        if op.name in _FINAL and i != len(ops) - 1:
            raise ValueError(f"{op.name} must be the last op of the spec {spec!r} (it ends the uint8 stage)")
    return ops


def eval_spec(train_spec: str) -> str:
    """The evaluation counterpart of a train spec: only its final normalize / to_float (the original's
    small-image scripts evaluate with ToTensor + Normalize only)."""
    ops = parse(train_spec)
    if ops and ops[-1].name in _FINAL:
        return _parts(train_spec)[-1]
    return ""


def _stage_op(op: Op) -> Callable[[jax.Array, _Stage], _Stage]:
    k = dict(op.kwargs)
    if op.name == "rotate":
        return _op_rotate(k["degrees"], k["interpolation"])
    if op.name == "random_affine":
        return _op_affine(k["degrees"], k["translate"], k["scale"], k["interpolation"])
    if op.name == "perspective":
        return _op_perspective(k["distortion_scale"], k["p"], k["interpolation"])
    if op.name == "random_resized_crop":
        return _op_rrc(k["size"], k["scale"], k["ratio"])
    if op.name == "pad_crop":
        return _op_pad_crop(k["size"], k["padding"])
    if op.name in ("hflip", "vflip"):
        return _op_flip(1 if op.name == "hflip" else 0, k["p"])
    if op.name == "resize":
        return _op_resize(k["size"])
    if op.name == "center_crop":
        return _op_center_crop(k["size"])
    raise AssertionError(op.name)


def build(spec: str, dtype: Any = jnp.float32) -> Pipeline:
    """Build ``fn(key, images) -> augmented`` from a spec string.

    ``images``: uint8 (or integer-valued float) NHWC batch, values 0..255. Output: ``dtype`` NHWC in
    ToTensor scale ([0, 1]), then ``normalize(mean, std)`` if the spec ends with it. ``key`` may be None
    for a spec without random ops. Every example gets its own key (``jax.random.split(key, B)``).
    """
    ops = parse(spec)
    final = ops[-1] if ops and ops[-1].name in _FINAL else None
    stage_ops = [_stage_op(op) for op in ops if op.name not in (*_FINAL, "to_rgb")]
    rgb = any(op.name == "to_rgb" for op in ops)  # applied once at the end (see the module docstring)
    needs_key = any(op.name in _RANDOM for op in ops)
    if final is not None and final.name == "normalize":
        mean = np.asarray(final.get("mean"), np.float32)
        std = np.asarray(final.get("std"), np.float32)
    else:
        mean, std = np.zeros((1,), np.float32), np.ones((1,), np.float32)

    def one(key: jax.Array, img: jax.Array) -> jax.Array:
        st = _from_array(img)
        keys = jax.random.split(key, max(len(stage_ops), 1))
        for k, op in zip(keys, stage_ops, strict=False):
            st = op(k, st)
        return _materialize(st)

    def fn(key: jax.Array | None, images: jax.Array) -> jax.Array:
        if images.ndim != 4:
            raise ValueError(f"images must be a (B, H, W, C) batch, got shape {images.shape}")
        c = images.shape[-1]
        if rgb:
            if c not in (1, 3):
                raise ValueError(f"to_rgb needs 1- or 3-channel images, got {c} channels (shape {images.shape})")
            c = 3
        if mean.size not in (1, c) or std.size not in (1, c):
            raise ValueError(
                f"normalize has {mean.size} mean / {std.size} std values for images with {c} channels"
            )
        if key is None:
            if needs_key:
                raise ValueError(f"spec {spec!r} has random ops: pass a PRNG key")
            key = jax.random.key(0)
        if stage_ops:
            keys = jax.random.split(key, images.shape[0])
            x = jax.vmap(one)(keys, images)
        else:
            x = images.astype(jnp.float32)
        if rgb:
            x = _repeat_rgb(x)
        x = (x * (1.0 / 255.0) - mean) / std
        return x.astype(dtype)

    return fn


# ----------------------------------------------------------------------------------------------
# Batch-level public functions (each is the same code as the pipeline op).
# ----------------------------------------------------------------------------------------------


def _repeat_rgb(images: jax.Array) -> jax.Array:
    return jnp.broadcast_to(images, (*images.shape[:-1], 3)) if images.shape[-1] == 1 else images


def _apply(stage_op: Callable, key: jax.Array | None, images: jax.Array) -> jax.Array:
    """Apply one stage op per example; returns float32 in the input's 0..255 scale."""
    if key is None:
        key = jax.random.key(0)
    keys = jax.random.split(key, images.shape[0])
    return jax.jit(jax.vmap(lambda k, im: _materialize(stage_op(k, _from_array(im)))))(keys, images)


def rotate(key: jax.Array, images: jax.Array, degrees: float | Sequence[float], interpolation: str = "nearest") -> jax.Array:
    """RandomRotation(degrees, fill=0): per-example angle ~ U(-d, d) (or U(d0, d1)), about the centre."""
    k = _v_rotate({"degrees": degrees, "interpolation": interpolation})
    return _apply(_op_rotate(k["degrees"], k["interpolation"]), key, images)


def random_affine(key: jax.Array, images: jax.Array, degrees: float | Sequence[float],
                  translate: tuple[float, float] | None = None, scale: tuple[float, float] | None = None,
                  interpolation: str = "nearest") -> jax.Array:
    """RandomAffine(degrees, translate, scale, fill=0), no shear; see :func:`random_affine_params`."""
    k = _v_affine({"degrees": degrees, "translate": translate, "scale": scale, "interpolation": interpolation})
    return _apply(_op_affine(k["degrees"], k["translate"], k["scale"], k["interpolation"]), key, images)


def to_rgb(images: jax.Array) -> jax.Array:
    """Grey → RGB: repeats a single channel 3 times (identity on 3-channel images), dtype kept."""
    if images.ndim < 1 or images.shape[-1] not in (1, 3):
        raise ValueError(f"to_rgb needs 1- or 3-channel images (channels last), got shape {images.shape}")
    return _repeat_rgb(images)


def perspective(key: jax.Array, images: jax.Array, distortion_scale: float = 0.5, p: float = 0.5,
                interpolation: str = "bilinear") -> jax.Array:
    """RandomPerspective(distortion_scale, p, fill=0)."""
    k = _v_perspective({"distortion_scale": distortion_scale, "p": p, "interpolation": interpolation})
    return _apply(_op_perspective(k["distortion_scale"], k["p"], k["interpolation"]), key, images)


def random_resized_crop(key: jax.Array, images: jax.Array, size: int | tuple[int, int],
                        scale: tuple[float, float] = (0.08, 1.0),
                        ratio: tuple[float, float] = (3 / 4, 4 / 3)) -> jax.Array:
    """RandomResizedCrop(size, scale, ratio), bilinear."""
    k = _v_rrc({"size": size, "scale": scale, "ratio": ratio})
    return _apply(_op_rrc(k["size"], k["scale"], k["ratio"]), key, images)


def pad_crop(key: jax.Array, images: jax.Array, size: int | tuple[int, int], padding: int = 0) -> jax.Array:
    """RandomCrop(size, padding) with zero padding."""
    k = _v_pad_crop({"size": size, "padding": padding})
    return _apply(_op_pad_crop(k["size"], k["padding"]), key, images)


def hflip(key: jax.Array, images: jax.Array, p: float = 0.5) -> jax.Array:
    """RandomHorizontalFlip(p)."""
    return _apply(_op_flip(1, _prob(p, "hflip")), key, images)


def vflip(key: jax.Array, images: jax.Array, p: float = 0.5) -> jax.Array:
    """RandomVerticalFlip(p)."""
    return _apply(_op_flip(0, _prob(p, "vflip")), key, images)


def resize(images: jax.Array, size: int | tuple[int, int]) -> jax.Array:
    """Resize(size) with antialias (int: the shorter edge becomes ``size``)."""
    return _apply(_op_resize(_v_resize({"size": size})["size"]), None, images)


def center_crop(images: jax.Array, size: int | tuple[int, int]) -> jax.Array:
    """CenterCrop(size) (zero-padded when larger than the image)."""
    return _apply(_op_center_crop(_size(size, "center_crop")), None, images)


def normalize(images: jax.Array, mean: float | Sequence[float], std: float | Sequence[float]) -> jax.Array:
    """ToTensor + Normalize: ``(images / 255 - mean) / std`` in float32."""
    k = _v_normalize({"mean": mean, "std": std})
    m, s = jnp.asarray(k["mean"], jnp.float32), jnp.asarray(k["std"], jnp.float32)
    return (images.astype(jnp.float32) / 255.0 - m) / s


# ----------------------------------------------------------------------------------------------
# Looking at augmentations.
# ----------------------------------------------------------------------------------------------


def _parts(spec: str) -> list[str]:
    return [p.strip() for p in spec.split("|") if p.strip()]


def _display_spec(spec: str) -> str:
    """The spec without its final normalize / to_float (images are shown in [0, 1])."""
    ops = parse(spec)
    return "|".join(p for p, op in zip(_parts(spec), ops, strict=True) if op.name not in _FINAL)


def show_augmentations_arrays(
    images: np.ndarray,
    out_path: str | os.PathLike,
    spec: str,
    num_draws: int = 5,
    seed: int = 0,
    title: str | None = None,
) -> str:
    """Write a PNG grid: one row per image, original then ``num_draws`` augmented versions."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    images = np.asarray(images)
    if images.ndim != 4 or images.shape[0] == 0:
        raise ValueError(f"images must be a non-empty (N, H, W, C) array, got shape {images.shape}")
    if num_draws < 1:
        raise ValueError(f"num_draws must be >= 1, got {num_draws}")
    spec = spec or ""
    shown = _display_spec(spec)
    fn = jax.jit(build(shown))
    keys = jax.random.split(jax.random.key(seed), num_draws)
    draws = [np.asarray(fn(k, jnp.asarray(images))) for k in keys]
    n = images.shape[0]
    fig, axes = plt.subplots(n, num_draws + 1, figsize=(1.3 * (num_draws + 1), 1.3 * n + 0.6), squeeze=False)
    for r in range(n):
        row = [images[r].astype(np.float32) / 255.0] + [d[r] for d in draws]
        for c, im in enumerate(row):
            ax = axes[r, c]
            im = np.clip(im, 0.0, 1.0)
            if im.shape[-1] == 1:
                ax.imshow(im[..., 0], cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest")
            else:
                ax.imshow(im, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title("original" if c == 0 else f"draw {c}", fontsize=8)
    fig.suptitle(title or f"augment: {shown or '(none)'}", fontsize=9)
    fig.tight_layout()
    out_path = os.fspath(out_path)
    try:
        with atomic_writer(out_path) as f:
            fig.savefig(f, format="png", dpi=100)
    finally:
        plt.close(fig)
    return out_path


def show_augmentations(
    name: str,
    out_path: str | os.PathLike,
    spec: str | None = None,
    num_examples: int = 8,
    num_draws: int = 5,
    seed: int = 0,
    data_dir: str | None = None,
) -> str:
    """Write a PNG grid of original and augmented train images of dataset ``name``.

    ``spec`` defaults to the original's train augmentation for the dataset (``default_spec``).
    """
    if spec is None:
        spec = default_spec(name)
    parse(spec)  # bad spec → ValueError before loading data
    if num_examples < 1:
        raise ValueError(f"num_examples must be >= 1, got {num_examples}")
    from spinal_jax.data import load_arrays  # helper C1's loader

    images, _ = load_arrays(name, "train", data_dir)
    rng = np.random.default_rng(seed)
    idx = np.sort(rng.choice(len(images), size=min(num_examples, len(images)), replace=False))
    return show_augmentations_arrays(
        np.asarray(images)[idx], out_path, spec, num_draws=num_draws, seed=seed,
        title=f"{name}: {_display_spec(spec) or '(no augmentation)'}",
    )
