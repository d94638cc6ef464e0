"""Wide-ResNet-101-2 (ImageNet) on CIFAR-100 with its fc or the SpinalNet head (V3, width 512)
(`Transfer Learning/Transfer_Learning_CIFAR100.py`, ORIGINAL §2.5).

Command: ``spinal-jax train --config cifar100_tl_wrn101 --workdir runs/cifar100_tl_wrn101``
(``--config.head=spinal`` for the SpinalNet head; both heads and seeds: ``spinal-jax grid cifar100_tl_wrn101 --seeds 3 --workdir runs``)

Expected runtime on one H100: ≈1.5–3 h per run (estimate).

Original's reported accuracy: spinal 88.34% (script header comment; bar chart 88.34); default: none.

Quirks and choices:
- The script's data_dir is 'data/cifar10' with 100 classes (quirk 1.9.10); CIFAR-100 is used here.
- Resizing/cropping/flipping and normalisation of this streamed dataset are the original's
  torchvision transforms, applied on the host by spinal_jax.data (info(name).train_preprocess /
  eval_preprocess); train_augment/eval_preprocess stay empty.
- Needs ImageNet weights: pass `--config.init_checkpoint=PATH` (torchvision state dict); without it
  the backbone starts from random weights, which is not the original's experiment.
"""

from spinal_jax.configs import transfer


def get_config():
    """The grid entry ``cifar100_tl_wrn101``."""
    return transfer(
        "wide_resnet101_2",
        "cifar100",
        name="cifar100_tl_wrn101",
        batch_size=24,
        learning_rate=1e-3,
        epochs=50,
    )
