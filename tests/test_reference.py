"""The float64 NumPy reference: imports no JAX, agrees with a hand-written forward."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from spinal_jax import reference

REF_PATH = Path(reference.__file__)


def test_reference_module_imports_no_jax():
    """Load reference.py on its own (not through the package __init__) and check sys.modules."""
    code = (
        "import importlib.util, sys\n"
        f"spec = importlib.util.spec_from_file_location('ref_standalone', {str(REF_PATH)!r})\n"
        "mod = importlib.util.module_from_spec(spec); sys.modules[spec.name] = mod\n"
        "spec.loader.exec_module(mod)\n"
        "assert mod.segment_size(10, 4) == 2\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('jax', 'jaxlib', 'flax'))\n"
        "print(bad)\n"
        "sys.exit(1 if bad else 0)\n"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stdout + res.stderr
    assert importlib.util.find_spec("spinal_jax.reference") is not None


def test_reference_by_hand():
    rng = np.random.default_rng(0)
    d, w = 5, 2  # num_splits=2 -> s = round(2.5) = 2; layer starts 0, 2, 4 (wraps to 0)
    x = rng.standard_normal((3, d))
    params = {
        "hidden_0": {"kernel": rng.standard_normal((2, w)), "bias": rng.standard_normal(w)},
        "hidden_1": {"kernel": rng.standard_normal((4, w)), "bias": rng.standard_normal(w)},
        "hidden_2": {"kernel": rng.standard_normal((4, w)), "bias": rng.standard_normal(w)},
        "output": {"kernel": rng.standard_normal((6, 1)), "bias": rng.standard_normal(1)},
    }
    relu = lambda v: np.maximum(v, 0)  # noqa: E731
    h0 = relu(x[:, [0, 1]] @ params["hidden_0"]["kernel"] + params["hidden_0"]["bias"])
    h1 = relu(np.hstack([x[:, [2, 3]], h0]) @ params["hidden_1"]["kernel"] + params["hidden_1"]["bias"])
    h2 = relu(np.hstack([x[:, [4, 0]], h1]) @ params["hidden_2"]["kernel"] + params["hidden_2"]["bias"])
    want = np.hstack([h0, h1, h2]) @ params["output"]["kernel"] + params["output"]["bias"]
    np.testing.assert_allclose(reference.forward(params, x), want, rtol=1e-12)
    with pytest.raises(ValueError, match="segment size"):
        reference.forward(params, rng.standard_normal((3, 9)))
