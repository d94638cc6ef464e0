"""Test set-up: 8 simulated CPU devices (a real Mesh for sharding tests), float32 matmuls exact, and
compiling made cheaper (the tests spend about two thirds of their time in XLA's CPU compiler):

- one persistent compilation cache for the session, in a directory of its own (not the user's
  ``~/.cache/spinal_jax``, so the tests neither read a warm cache nor leave files behind), used by the
  test processes and by the CLI runs they start: a program that several tests build (the same model,
  optimizer and shapes) compiles once;
- XLA's CPU backend at LLVM optimisation level 1 instead of 2: the same operations, compiled in about
  half the time (a VGG-5 initialisation 7.7 s -> 3.4 s), run a little slower (a VGG-5 train step +18%).
"""

import atexit
import os
import shutil
import tempfile

os.environ.setdefault("XLA_FLAGS", "")
if "xla_force_host_platform_device_count" not in os.environ["XLA_FLAGS"]:
    os.environ["XLA_FLAGS"] += " --xla_force_host_platform_device_count=8"
if "xla_backend_optimization_level" not in os.environ["XLA_FLAGS"]:
    os.environ["XLA_FLAGS"] += " --xla_backend_optimization_level=1"
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
if "SPINAL_JAX_COMPILATION_CACHE" not in os.environ:  # set once by pytest's first process; xdist workers inherit it
    _cache = tempfile.mkdtemp(prefix="spinal_jax_test_xla_")
    os.environ["SPINAL_JAX_COMPILATION_CACHE"] = _cache
    atexit.register(shutil.rmtree, _cache, ignore_errors=True)

import jax

jax.config.update("jax_default_matmul_precision", "highest")

from spinal_jax.train.loop import enable_compilation_cache  # noqa: E402

enable_compilation_cache(os.environ["SPINAL_JAX_COMPILATION_CACHE"])
