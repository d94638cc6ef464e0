"""Wide-ResNet-101-2 (ImageNet) on Fruits-360 with its fc or the SpinalNet head (V1, width 131)
(`Transfer Learning/Transfer_Learning_Fruits360.py`, ORIGINAL §2.5).

Command: ``spinal-jax train --config fruits360_wrn101 --workdir runs/fruits360_wrn101``
(``--config.head=spinal`` for the SpinalNet head; both heads and seeds: ``spinal-jax grid fruits360_wrn101 --seeds 3 --workdir runs``)

Expected runtime on one H100: ≈30–60 min per run (estimate).

Original's reported accuracy: spinal 99.99% (script comment; bar chart ≈99.97–100); default: none.

Quirks and choices:
- Best `Test` epoch reported (paper protocol).
- Resizing/cropping/flipping and normalisation of this streamed dataset are the original's
  torchvision transforms, applied on the host by spinal_jax.data (info(name).train_preprocess /
  eval_preprocess); train_augment/eval_preprocess stay empty.
- Needs ImageNet weights: pass `--config.init_checkpoint=PATH` (torchvision state dict); without it
  the backbone starts from random weights, which is not the original's experiment.
"""

from spinal_jax.configs import transfer


def get_config():
    """The grid entry ``fruits360_wrn101``."""
    return transfer(
        "wide_resnet101_2",
        "fruits360",
        name="fruits360_wrn101",
        batch_size=224,
        learning_rate=1e-2,
        epochs=20,
        model_overrides={"variant": "v1", "width": 131},
    )
