"""VGG-5 on MNIST with the default or the SpinalNet head (`MNIST_VGG/MNIST_VGG_and_SpinalVGG.py`,
ORIGINAL §2.2).

Command: ``spinal-jax train --config mnist_vgg5 --workdir runs/mnist_vgg5``
(``--config.head=spinal`` for the SpinalNet head; both heads and seeds: ``spinal-jax grid mnist_vgg5 --seeds 3 --workdir runs``)

Expected runtime on one H100: ≈5–10 min per run (estimate: ≈1–2 s per 60k-image epoch × 200 epochs).

Original's reported accuracy: spinal ≈99.72% (supplementary bar chart, §3.2, pixel-measured; model
inferred); default: none reported.

Quirks and choices:
- Both heads are trained in one loop on identical batches in the original; here the two heads are
  separate runs with the same seed (same data order and augmentation draws).
- The models return log_softmax and are trained with CrossEntropyLoss (quirk 1.9.8): identical to
  cross-entropy on logits, which is what runs here.
"""

from spinal_jax.configs import NORM_MNIST, PERSP_ROT10, vgg5


def get_config():
    """The grid entry ``mnist_vgg5``."""
    return vgg5("mnist", PERSP_ROT10, NORM_MNIST, name="mnist_vgg5")
