"""VGG-5 on EMNIST-Letters with the default or the SpinalNet head (`MNIST_VGG/EMNIST_letters_VGG_and
_SpinalVGG.py`, ORIGINAL §2.2).

Command: ``spinal-jax train --config emnist_letters_vgg5 --workdir runs/emnist_letters_vgg5``
(``--config.head=spinal`` for the SpinalNet head; both heads and seeds: ``spinal-jax grid emnist_letters_vgg5 --seeds 3 --workdir runs``)

Expected runtime on one H100: ≈7–14 min per run (estimate: ≈1–2 s per 88k-image epoch × 200 epochs).

Original's reported accuracy: spinal 95.88% (README news 2020-07-10, Papers-with-Code); default:
none reported.

Quirks and choices:
- Both heads are trained in one loop on identical batches in the original; here the two heads are
  separate runs with the same seed (same data order and augmentation draws).
- The models return log_softmax and are trained with CrossEntropyLoss (quirk 1.9.8): identical to
  cross-entropy on logits, which is what runs here.
- 62 logits as the letters script (quirk 1.9.9); TFDS letters labels are 1..26 of 37, balanced 0..46
  of 47; the unused logits are kept for fidelity (`--config.num_classes=None` uses the dataset's
  count).
"""

from spinal_jax.configs import NORM_MNIST, PERSP_ROT10, vgg5


def get_config():
    """The grid entry ``emnist_letters_vgg5``."""
    return vgg5("emnist/letters", PERSP_ROT10, NORM_MNIST, name="emnist_letters_vgg5", num_classes=62)
