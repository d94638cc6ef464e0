"""Test set-up: 8 simulated CPU devices (a real Mesh for sharding tests), float32 matmuls exact, and
the compilation cache of every CLI run the tests start in a directory of this session (not the user's
``~/.cache/spinal_jax``, so the tests neither read a warm cache nor leave files behind)."""

import atexit
import os
import shutil
import tempfile

os.environ.setdefault("XLA_FLAGS", "")
if "xla_force_host_platform_device_count" not in os.environ["XLA_FLAGS"]:
    os.environ["XLA_FLAGS"] += " --xla_force_host_platform_device_count=8"
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
if "SPINAL_JAX_COMPILATION_CACHE" not in os.environ:  # set once by pytest's first process; xdist workers inherit it
    _cache = tempfile.mkdtemp(prefix="spinal_jax_test_xla_")
    os.environ["SPINAL_JAX_COMPILATION_CACHE"] = _cache
    atexit.register(shutil.rmtree, _cache, ignore_errors=True)

import jax

jax.config.update("jax_default_matmul_precision", "highest")
