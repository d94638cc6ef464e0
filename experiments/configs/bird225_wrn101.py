"""Wide-ResNet-101-2 (ImageNet) on 225 Bird Species with its fc or the SpinalNet head (V3, width 1024)
(`Transfer Learning/Transfer_Learning_Bird225.py`, ORIGINAL §2.5).

Command: ``spinal-jax train --config bird225_wrn101 --workdir runs/bird225_wrn101``
(``--config.head=spinal`` for the SpinalNet head; both heads and seeds: ``spinal-jax grid bird225_wrn101 --seeds 3 --workdir runs``)

Expected runtime on one H100: ≈1–2 h per run (estimate).

Original's reported accuracy: spinal 99.56% test at best val (script header; bar chart 99.56);
default: none for WRN.

Quirks and choices:
- Test accuracy at the best `valid` epoch (clean protocol, the dataset's own valid split).
- Resizing/cropping/flipping and normalisation of this streamed dataset are the original's
  torchvision transforms, applied on the host by spinal_jax.data (info(name).train_preprocess /
  eval_preprocess); train_augment/eval_preprocess stay empty.
- Needs ImageNet weights: pass `--config.init_checkpoint=PATH` (torchvision state dict); without it
  the backbone starts from random weights, which is not the original's experiment.
"""

from spinal_jax.configs import transfer


def get_config():
    """The grid entry ``bird225_wrn101``."""
    return transfer(
        "wide_resnet101_2",
        "bird225",
        name="bird225_wrn101",
        batch_size=24,
        learning_rate=1e-3,
        epochs=25,
        protocol="clean",
        validation="split:valid",
        model_overrides={"width": 1024},
    )
