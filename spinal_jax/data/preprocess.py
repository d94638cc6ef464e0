"""Host-side (PIL) versions of the original's torchvision transforms, for the streaming path.

torchvision applied these transforms to PIL images, so PIL's resampling is the faithful choice.
Random parameters follow torchvision: RandomRotation U(-d, d) degrees (nearest, fill 0, no expand),
RandomCrop offsets uniform over valid positions, RandomResizedCrop with 10 tries and the centre-crop
fallback, flips with p = 0.5.

Why a second (host) path next to :mod:`spinal_jax.data.augment` (device): the streamed transfer-learning
sets have large images of varying sizes on disk, which must be resized/cropped to one shape before they
can be batched onto the device. The parameter rules are the same; the RandomResizedCrop fallback is
shared (``augment.resized_crop_fallback``); the random draws use numpy here (per-image
``default_rng``, deterministic across threads) and jax keys there.
"""

from __future__ import annotations

import math

import numpy as np
from PIL import Image

from spinal_jax.data.augment import resized_crop_fallback
from spinal_jax.data.catalog import HostPreprocess


def _resize(img: Image.Image, size: int | tuple[int, int]) -> Image.Image:
    w, h = img.size
    if isinstance(size, int):
        short, long = (w, h) if w <= h else (h, w)
        new_short, new_long = size, int(size * long / short)
        new_w, new_h = (new_short, new_long) if w <= h else (new_long, new_short)
    else:
        new_h, new_w = size
    if (new_w, new_h) == (w, h):
        return img
    return img.resize((new_w, new_h), Image.BILINEAR)


def _check_fits(img: Image.Image, size: tuple[int, int], what: str) -> None:
    w, h = img.size
    if size[0] > h or size[1] > w:
        raise ValueError(f"{what} {size} is larger than the image ({h}, {w}); resize first")


def _rrc_params(h: int, w: int, scale, ratio, rng: np.random.Generator) -> tuple[int, int, int, int]:
    area = h * w
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target_area = area * rng.uniform(scale[0], scale[1])
        aspect = math.exp(rng.uniform(*log_ratio))
        cw = round(math.sqrt(target_area * aspect))
        ch = round(math.sqrt(target_area / aspect))
        if 0 < cw <= w and 0 < ch <= h:
            return int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1)), ch, cw
    ch, cw = resized_crop_fallback(h, w, ratio)
    return (h - ch) // 2, (w - cw) // 2, ch, cw


def apply(image: np.ndarray, p: HostPreprocess | None, rng: np.random.Generator) -> np.ndarray:
    """Applies ``p`` to one uint8 (H, W, C) image; uint8 out, or float32 when ``p.normalize`` is set."""
    if p is None:
        return image
    channels = image.shape[-1]
    img = Image.fromarray(image[..., 0] if channels == 1 else image)
    if p.resize is not None:
        img = _resize(img, p.resize)
    if p.rotate:
        angle = float(rng.uniform(-p.rotate, p.rotate))
        img = img.rotate(angle, resample=Image.NEAREST, expand=False, fillcolor=0)
    if p.center_crop is not None:
        _check_fits(img, p.center_crop, "center_crop")
        w, h = img.size
        top, left = round((h - p.center_crop[0]) / 2.0), round((w - p.center_crop[1]) / 2.0)
        img = img.crop((left, top, left + p.center_crop[1], top + p.center_crop[0]))
    if p.crop is not None:
        _check_fits(img, p.crop, "crop")
        w, h = img.size
        top = int(rng.integers(0, h - p.crop[0] + 1))
        left = int(rng.integers(0, w - p.crop[1] + 1))
        img = img.crop((left, top, left + p.crop[1], top + p.crop[0]))
    if p.random_resized_crop is not None:
        w, h = img.size
        top, left, ch, cw = _rrc_params(h, w, p.rrc_scale, (3 / 4, 4 / 3), rng)
        th, tw = p.random_resized_crop
        img = img.resize((tw, th), Image.BILINEAR, box=(left, top, left + cw, top + ch))
    if p.hflip and rng.random() < 0.5:
        img = img.transpose(Image.FLIP_LEFT_RIGHT)
    if p.vflip and rng.random() < 0.5:
        img = img.transpose(Image.FLIP_TOP_BOTTOM)
    out = np.asarray(img, dtype=np.uint8)
    if out.ndim == 2:
        out = out[..., None]
    if p.normalize is None:
        return out
    mean = np.asarray(p.normalize[0], np.float32)
    std = np.asarray(p.normalize[1], np.float32)
    return (out.astype(np.float32) / 255.0 - mean) / std
