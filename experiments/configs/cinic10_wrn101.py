"""Wide-ResNet-101-2 (ImageNet) on CINIC-10 with its fc or the SpinalNet head (V1, width 20) (`Transfer
Learning/Transfer_Learning_CINIC10.py`, ORIGINAL §2.5).

Command: ``spinal-jax train --config cinic10_wrn101 --workdir runs/cinic10_wrn101``
(``--config.head=spinal`` for the SpinalNet head; both heads and seeds: ``spinal-jax grid cinic10_wrn101 --seeds 3 --workdir runs``)

Expected runtime on one H100: ≈8–15 h per run (estimate: 90k images at 448² × 40 epochs).

Original's reported accuracy: spinal 93.60% (script header; bar chart 93.60); default: none.

Quirks and choices:
- Test accuracy at the best `valid` epoch (clean protocol with the dataset's own valid split).
- Two stages: 1e-2 × 20 then 1e-3 × 20.
- Resizing/cropping/flipping and normalisation of this streamed dataset are the original's
  torchvision transforms, applied on the host by spinal_jax.data (info(name).train_preprocess /
  eval_preprocess); train_augment/eval_preprocess stay empty.
- Needs ImageNet weights: pass `--config.init_checkpoint=PATH` (torchvision state dict); without it
  the backbone starts from random weights, which is not the original's experiment.
"""

from spinal_jax.configs import transfer


def get_config():
    """The grid entry ``cinic10_wrn101``."""
    return transfer(
        "wide_resnet101_2",
        "cinic10",
        name="cinic10_wrn101",
        batch_size=9,
        stages=((1e-2, 20), (1e-3, 20)),
        protocol="clean",
        validation="split:valid",
        model_overrides={"variant": "v1", "width": 20},
    )
