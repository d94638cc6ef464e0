"""VGG-19-BN (ImageNet) on MNIST with its classifier or `classifier = SpinalNet` (V3, seg 12544, width
1024) (`Transfer Learning/Transfer_Learning_MNIST.py`, ORIGINAL §2.5).

Command: ``spinal-jax train --config mnist_tl_vgg19_bn --workdir runs/mnist_tl_vgg19_bn``
(``--config.head=spinal`` for the SpinalNet head; both heads and seeds: ``spinal-jax grid mnist_tl_vgg19_bn --seeds 3 --workdir runs``)

Expected runtime on one H100: ≈1–2 h per run (estimate: 54k images at 112² × 20 epochs).

Original's reported accuracy: spinal 99.75% test at best valid (notebook transfer-learning-on-mnist-
with-vgg, §2.7); default: none.

Quirks and choices:
- Validation = every 10th train image (idx % 10 == 0; the notebook used idx % 10 == 4); test at best
  valid.
- Grayscale MNIST is repeated to 3 channels (``to_rgb``: the original's ImageFolder loaded the PNGs
  as RGB), resized to 120² and randomly cropped to 112²; the 1-channel MNIST statistics are broadcast
  to the three channels, as in the original.
- Two stages: 1e-2 × 10 then 1e-3 × 10.
- Needs ImageNet weights: pass `--config.init_checkpoint=PATH` (torchvision state dict); without it
  the backbone starts from random weights, which is not the original's experiment.
"""

from spinal_jax.configs import NORM_MNIST, transfer


def get_config():
    """The grid entry ``mnist_tl_vgg19_bn``."""
    return transfer(
        "vgg19_bn",
        "mnist",
        name="mnist_tl_vgg19_bn",
        batch_size=128,
        stages=((1e-2, 10), (1e-3, 10)),
        protocol="clean",
        validation="mod10:0",
        train_augment="to_rgb|resize((120, 120))|rotate(10)|pad_crop(112)|perspective(0.5, p=0.5)|" + NORM_MNIST,
        eval_preprocess="to_rgb|resize((112, 112))|" + NORM_MNIST,
    )
