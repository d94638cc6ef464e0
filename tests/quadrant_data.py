"""Synthetic test images whose class (0..3) is the brightest quadrant, so training makes progress."""

import numpy as np


def quadrant_images(rng: np.random.Generator, n: int, size: int) -> tuple[np.ndarray, np.ndarray]:
    """``n`` uint8 images (size, size, 1) and int32 labels; the labelled quadrant is brightened by 150."""
    y = rng.integers(0, 4, n).astype(np.int32)
    x = rng.integers(0, 60, (n, size, size, 1)).astype(np.uint8)
    half = size // 2
    for i, c in enumerate(y):
        r, q = divmod(int(c), 2)
        x[i, half * r : half * r + half, half * q : half * q + half] += 150
    return x, y
