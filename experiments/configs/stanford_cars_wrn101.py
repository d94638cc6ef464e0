"""Wide-ResNet-101-2 (ImageNet) on Stanford Cars with its fc or the SpinalNet head (V1, width 196)
(`Transfer Learning/Transfer_Learning_Stanford_Cars.py`, ORIGINAL §2.5).

Command: ``spinal-jax train --config stanford_cars_wrn101 --workdir runs/stanford_cars_wrn101``
(``--config.head=spinal`` for the SpinalNet head; both heads and seeds: ``spinal-jax grid stanford_cars_wrn101 --seeds 3 --workdir runs``)

Expected runtime on one H100: ≈2–4 h per run (estimate: 8k images at 448² × 50 epochs).

Original's reported accuracy: spinal 93.35% (script header; bar chart 93.35); default: none.

Quirks and choices:
- TFDS cars196 train/test (the original: a Kaggle folder copy, best val = test).
- Two stages: 1e-3 × 25 then 1e-4 × 25.
- Resizing/cropping/flipping and normalisation of this streamed dataset are the original's
  torchvision transforms, applied on the host by spinal_jax.data (info(name).train_preprocess /
  eval_preprocess); train_augment/eval_preprocess stay empty.
- Needs ImageNet weights: pass `--config.init_checkpoint=PATH` (torchvision state dict); without it
  the backbone starts from random weights, which is not the original's experiment.
"""

from spinal_jax.configs import transfer


def get_config():
    """The grid entry ``stanford_cars_wrn101``."""
    return transfer(
        "wide_resnet101_2",
        "cars196",
        name="stanford_cars_wrn101",
        batch_size=9,
        stages=((1e-3, 25), (1e-4, 25)),
        model_overrides={"variant": "v1", "width": 196},
    )
