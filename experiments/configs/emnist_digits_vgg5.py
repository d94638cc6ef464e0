"""VGG-5 on EMNIST-Digits with the default or the SpinalNet head (`MNIST_VGG/EMNIST_digits_VGG_and
_SpinalVGG.py`, ORIGINAL §2.2).

Command: ``spinal-jax train --config emnist_digits_vgg5 --workdir runs/emnist_digits_vgg5``
(``--config.head=spinal`` for the SpinalNet head; both heads and seeds: ``spinal-jax grid emnist_digits_vgg5 --seeds 3 --workdir runs``)

Expected runtime on one H100: ≈20–40 min per run (estimate: ≈1–2 s per 240k-image epoch × 200
epochs).

Original's reported accuracy: spinal ≈99.82% (supplementary bar chart, §3.2); default: none
reported.

Quirks and choices:
- Both heads are trained in one loop on identical batches in the original; here the two heads are
  separate runs with the same seed (same data order and augmentation draws).
- The models return log_softmax and are trained with CrossEntropyLoss (quirk 1.9.8): identical to
  cross-entropy on logits, which is what runs here.
"""

from spinal_jax.configs import NORM_MNIST, PERSP_ROT10, vgg5


def get_config():
    """The grid entry ``emnist_digits_vgg5``."""
    return vgg5("emnist/digits", PERSP_ROT10, NORM_MNIST, name="emnist_digits_vgg5")
