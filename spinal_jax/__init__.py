"""spinal_jax: SpinalNet (Kabir et al., arXiv 2007.03347) in JAX/Flax.

``SpinalDense`` is the Flax linen layer; ``spinal_jax.nnx.SpinalDense`` its NNX twin;
``spinal_jax.reference`` a float64 numpy forward of the same function (importing it loads no JAX);
``spinal_jax.models`` the models of the original's benchmark grid; ``spinal_jax.data`` the TFDS input
pipelines; ``spinal_jax.train`` the jit-compiled trainer; ``spinal_jax.interop.torch`` PyTorch weights.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"
__all__ = ["SpinalDense", "__version__"]

if TYPE_CHECKING:
    from spinal_jax.layers import SpinalDense


def __getattr__(name: str) -> Any:
    # Lazy, so that ``import spinal_jax.reference`` (numpy only) does not import JAX.
    if name == "SpinalDense":
        from spinal_jax.layers import SpinalDense

        return SpinalDense
    raise AttributeError(f"module 'spinal_jax' has no attribute {name!r}")
