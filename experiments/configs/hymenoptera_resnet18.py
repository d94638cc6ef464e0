"""ResNet-18 (ImageNet) on ants/bees with its fc or the LeakyReLU 6-layer SpinalNet head (width 5,
fc3/fc4 reuse bug §1.5) (`Transfer Learning/Transfer_Learning_hymenoptera.py`, ORIGINAL §2.5).

Command: ``spinal-jax train --config hymenoptera_resnet18 --workdir runs/hymenoptera_resnet18``
(``--config.head=spinal`` for the SpinalNet head; both heads and seeds: ``spinal-jax grid hymenoptera_resnet18 --seeds 3 --workdir runs``)

Expected runtime on one H100: ≈1 min per run (estimate: 244 images × 25 epochs).

Original's reported accuracy: none.

Quirks and choices:
- The head reuses fc3/fc4 weights as the original (bug §1.5, reproduced by the model's `reuse6`
  variant).
- Best `val` epoch reported (paper protocol: val is the only held-out split).
- Resizing/cropping/flipping and normalisation of this streamed dataset are the original's
  torchvision transforms, applied on the host by spinal_jax.data (info(name).train_preprocess /
  eval_preprocess); train_augment/eval_preprocess stay empty.
- Needs ImageNet weights: pass `--config.init_checkpoint=PATH` (torchvision state dict); without it
  the backbone starts from random weights, which is not the original's experiment.
"""

from spinal_jax.configs import transfer


def get_config():
    """The grid entry ``hymenoptera_resnet18``."""
    return transfer(
        "resnet18",
        "hymenoptera",
        name="hymenoptera_resnet18",
        batch_size=4,
        learning_rate=1e-3,
        epochs=25,
    )
