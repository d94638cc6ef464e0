"""Wide-ResNet-101-2 on STL-10 with the customizable SpinalNet (10 hidden layers of width 512)
(`Customizable Model/Customizable-SpinalNet-on-STL-10.ipynb`, ORIGINAL §2.6).

Command: ``spinal-jax train --config stl10_wrn101_customizable --workdir runs/stl10_wrn101_customizable``
(``--config.head=spinal`` for the SpinalNet head; both heads and seeds: ``spinal-jax grid stl10_wrn101_customizable --seeds 3 --workdir runs``)

Expected runtime on one H100: ≈10–20 min per run (estimate: 15 epochs).

Original's reported accuracy: spinal 98.39% test at best validation (notebook output, §2.6);
default: none.

Quirks and choices:
- Validation = every 10th train image (idx % 10 == 0); test accuracy at the best validation epoch
  (clean protocol).
- Two stages: lr 1e-3 × 5 then 1e-4 × 10, fresh optimizer each.
- Resizing/cropping/flipping and normalisation of this streamed dataset are the original's
  torchvision transforms, applied on the host by spinal_jax.data (info(name).train_preprocess /
  eval_preprocess); train_augment/eval_preprocess stay empty.
- Needs ImageNet weights: pass `--config.init_checkpoint=PATH` (torchvision state dict); without it
  the backbone starts from random weights, which is not the original's experiment.
"""

from spinal_jax.configs import transfer


def get_config():
    """The grid entry ``stl10_wrn101_customizable``."""
    return transfer(
        "wide_resnet101_2",
        "stl10",
        name="stl10_wrn101_customizable",
        batch_size=24,
        stages=((1e-3, 5), (1e-4, 10)),
        protocol="clean",
        validation="mod10:0",
        model_overrides={"num_layers": 10, "width": 512},
    )
