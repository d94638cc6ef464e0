"""VGG-5 on Fashion-MNIST with the default or the SpinalNet head (`MNIST_VGG/FashionMNIST_VGG_and
_SpinalVGG.py`, ORIGINAL §2.2).

Command: ``spinal-jax train --config fashion_mnist_vgg5 --workdir runs/fashion_mnist_vgg5``
(``--config.head=spinal`` for the SpinalNet head; both heads and seeds: ``spinal-jax grid fashion_mnist_vgg5 --seeds 3 --workdir runs``)

Expected runtime on one H100 (measured 2026-12-06/07, experiments/results/): 0.81 s (default) / 0.84 s (spinal) a
training epoch in fp32, 0.55 / 0.58 s with ``--config.precision=bf16`` (gpu_benchmark.md); both heads'
200 epochs at once (``grid --jobs 2 --checkpoint-every 30`` under MPS, test evaluation every epoch) 4.9–5.0 min fp32
(295.2 / 298.3 s in two runs, 2026-12-07) / 3.4 min bf16 (2026-12-06) (both_heads_200ep.md).

Original's reported accuracy: spinal ≈94.68% (supplementary bar chart, §3.2, pixel-measured; model
inferred); default: none reported.

Quirks and choices:
- Both heads are trained in one loop on identical batches in the original; here the two heads are
  separate runs with the same seed (same data order and augmentation draws).
- The models return log_softmax and are trained with CrossEntropyLoss (quirk 1.9.8): identical to
  cross-entropy on logits, which is what runs here.
"""

from spinal_jax.configs import FASHION_AUG, NORM_HALF, vgg5


def get_config():
    """The grid entry ``fashion_mnist_vgg5``."""
    return vgg5("fashion_mnist", FASHION_AUG, NORM_HALF, name="fashion_mnist_vgg5")
