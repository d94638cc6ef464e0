"""Wide-ResNet-101-2 (ImageNet) on STL-10 with its fc or the SpinalNet head (V3, width 512) (`Transfer
Learning/Transfer_Learning_STL10.py`, ORIGINAL §2.5).

Command: ``spinal-jax train --config stl10_wrn101 --workdir runs/stl10_wrn101``
(``--config.head=spinal`` for the SpinalNet head; both heads and seeds: ``spinal-jax grid stl10_wrn101 --seeds 3 --workdir runs``)

Expected runtime on one H100: ≈10–20 min per run (estimate: 5k images at 256² × 20 epochs).

Original's reported accuracy: spinal 98.23% (script header); 98.6625% (deleted notebook
stl-10-spinalnet-98-66, §2.7; bar chart 98.66); default: none.

Quirks and choices:
- `val` = the test split, so the best test epoch is reported (paper protocol).
- Resizing/cropping/flipping and normalisation of this streamed dataset are the original's
  torchvision transforms, applied on the host by spinal_jax.data (info(name).train_preprocess /
  eval_preprocess); train_augment/eval_preprocess stay empty.
- Needs ImageNet weights: pass `--config.init_checkpoint=PATH` (torchvision state dict); without it
  the backbone starts from random weights, which is not the original's experiment.
"""

from spinal_jax.configs import transfer


def get_config():
    """The grid entry ``stl10_wrn101``."""
    return transfer(
        "wide_resnet101_2",
        "stl10",
        name="stl10_wrn101",
        batch_size=24,
        learning_rate=1e-3,
        epochs=20,
    )
