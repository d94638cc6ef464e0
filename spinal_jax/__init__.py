"""spinal_jax: SpinalNet (Kabir et al., arXiv 2007.03347) in JAX/Flax.

``SpinalDense`` is the Flax linen layer; ``spinal_jax.nnx.SpinalDense`` its NNX twin;
``spinal_jax.reference`` a float64 numpy forward of the same function; ``spinal_jax.models``
the models of the original's benchmark grid; ``spinal_jax.data`` the TFDS input pipelines;
``spinal_jax.train`` the jit-compiled trainer; ``spinal_jax.interop.torch`` PyTorch weights.
"""

from spinal_jax.layers import SpinalDense

__version__ = "0.1.0"
__all__ = ["SpinalDense", "__version__"]
