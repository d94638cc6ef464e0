"""Check spinal_jax.data.augment against real torchvision (tensor and PIL paths) at fixed parameters.

Needs torch + torchvision + pillow (the GPU machine has them; the dev machine has no torchvision).
For each op and 20 random parameter draws on random uint8 28×28 images it reports the fraction of pixels
that differ and the largest difference (grey levels). Writes check_augment_torchvision.json to --out.

    python experiments/check_augment_torchvision.py --out experiments/results
"""

from __future__ import annotations

import argparse
import json
import os

import jax
import jax.numpy as jnp
import numpy as np


def main(argv: list[str] | None = None) -> dict:
    import torch
    import torchvision
    from PIL import Image
    from torchvision.transforms import InterpolationMode
    from torchvision.transforms import functional as F

    from spinal_jax.data import augment as A
    from spinal_jax.files import write_atomic

    p = argparse.ArgumentParser()
    p.add_argument("--out", default="experiments/results")
    args = p.parse_args(argv)
    rng = np.random.default_rng(0)
    h = w = 28

    def ours_warp(img: np.ndarray, m: jax.Array, interp: str, offset: float) -> np.ndarray:
        st = A._warp(A._from_array(jnp.asarray(img)), m, (h, w), interp, offset=offset)
        return np.asarray(A._materialize(st))

    stats: dict[str, list[tuple[float, float]]] = {}

    def record(name: str, ours: np.ndarray, ref: np.ndarray) -> None:
        d = np.abs(ours.astype(np.float64) - ref.astype(np.float64))
        stats.setdefault(name, []).append((float((d > 0).mean()), float(d.max())))

    for i in range(20):
        img = rng.integers(0, 256, (h, w, 1), dtype=np.uint8)
        t = torch.from_numpy(img).permute(2, 0, 1).contiguous()
        pil = Image.fromarray(img[..., 0])
        angle = float(rng.uniform(-10, 10))
        ours = ours_warp(img, A.rotation_matrix(angle, h, w), "nearest", 0.0)
        record("rotate/tensor", ours, F.rotate(t, angle, InterpolationMode.NEAREST, fill=[0.0]).permute(1, 2, 0).numpy())
        record("rotate/PIL", ours, np.asarray(F.rotate(pil, angle, InterpolationMode.NEAREST, fill=0))[..., None])
        end = np.asarray(A.perspective_params(jax.random.key(i), h, w, 0.5))
        start = [[0, 0], [w - 1, 0], [w - 1, h - 1], [0, h - 1]]
        ours = ours_warp(img, A.perspective_coefficients(jnp.asarray(end), h, w), "bilinear", 0.5)
        tv = F.perspective(t, start, end.tolist(), InterpolationMode.BILINEAR, fill=[0.0])
        record("perspective/tensor", ours, tv.permute(1, 2, 0).numpy())
        tvp = F.perspective(pil, start, end.tolist(), InterpolationMode.BILINEAR, fill=0)
        record("perspective/PIL", ours, np.asarray(tvp)[..., None])
        params = np.asarray(A.resized_crop_params(jax.random.key(100 + i), h, w, (0.95, 1.0), (3 / 4, 4 / 3)))
        ours = np.asarray(A._materialize(A._resized_crop(A._from_array(jnp.asarray(img)), jnp.asarray(params), (h, w))))
        top, left, ch, cw = (int(v) for v in params)
        tv = F.resized_crop(t, top, left, ch, cw, [h, w], InterpolationMode.BILINEAR, antialias=True)
        record("resized_crop/tensor", ours, tv.permute(1, 2, 0).numpy())
        tvp = F.resized_crop(pil, top, left, ch, cw, [h, w], InterpolationMode.BILINEAR)
        record("resized_crop/PIL", ours, np.asarray(tvp)[..., None])

    summary = {
        k: {"mean_frac_pixels_differ": float(np.mean([a for a, _ in v])), "max_abs_diff": float(max(b for _, b in v))}
        for k, v in stats.items()
    }
    out = {"torch": torch.__version__, "torchvision": torchvision.__version__, "draws": 20, "image": [h, w, 1], "results": summary}
    write_atomic(os.path.join(args.out, "check_augment_torchvision.json"), json.dumps(out, indent=2))
    print(json.dumps(out, indent=2))
    return out


if __name__ == "__main__":
    main()
