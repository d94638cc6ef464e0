"""The §2.8 regression toy data (``Regression/Regression_NN_and_SpinalNet.py``).

1000 samples, x1..x8 ~ N(0, 1) drawn with seed 0, and one of four targets plus 0.2·U(0, 1) noise
drawn per sample: "multiplication" (x1·x2·…·x8), "sine_multiplication" (sin of the product),
"addition" (x1+…+x8), "sine_addition" (sin of the sum). This is what the script's docstring describes;
the script itself broadcasts a (N, 1) noise column against an (N,) target (bug 1.9.7), which is NOT
reproduced here. Draw order: inputs first (N x 8 standard normals), then the N uniforms.
"""

from __future__ import annotations

import numpy as np

KINDS = ("multiplication", "sine_multiplication", "addition", "sine_addition")


def regression_data(kind: str, num_samples: int = 1000, seed: int = 0, noise: float = 0.2) -> tuple[np.ndarray, np.ndarray]:
    """(x float32 (N, 8), y float32 (N, 1)) of toy function ``kind`` (one of :data:`KINDS`)."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    if not isinstance(num_samples, int) or num_samples <= 0:
        raise ValueError(f"num_samples must be a positive int, got {num_samples!r}")
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((num_samples, 8))
    base = np.prod(x, axis=1) if "multiplication" in kind else np.sum(x, axis=1)
    if kind.startswith("sine"):
        base = np.sin(base)
    y = base + noise * rng.uniform(size=num_samples)
    return x.astype(np.float32), y[:, None].astype(np.float32)
