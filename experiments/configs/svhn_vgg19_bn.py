"""VGG-19-BN (ImageNet) on SVHN with its ImageNet-style classifier or the SpinalNet head (`Transfer
Learning/Transfer_Learning_SVHN.py`, ORIGINAL §2.5).

Command: ``spinal-jax train --config svhn_vgg19_bn --workdir runs/svhn_vgg19_bn``
(``--config.head=spinal`` for the SpinalNet head; both heads and seeds: ``spinal-jax grid svhn_vgg19_bn --seeds 3 --workdir runs``)

Expected runtime on one H100: ≈2–4 h per run (estimate: 73k images at 256² × 50 epochs).

Original's reported accuracy: 97.87% (script header, describing a WRN 'Spinal ResNet FC', not this
code; bar chart 97.87); default: none.

Quirks and choices:
- The script cannot run as written (ToTensor twice, quirk 1.9.2) and would train VGG's ImageNet
  classifier without the Spinal module (quirk 1.9.1). Here the declared SpinalNet_VGG head (V1,
  width 20) is attached as the classifier.
- Resizing/cropping/flipping and normalisation of this streamed dataset are the original's
  torchvision transforms, applied on the host by spinal_jax.data (info(name).train_preprocess /
  eval_preprocess); train_augment/eval_preprocess stay empty.
- Needs ImageNet weights: pass `--config.init_checkpoint=PATH` (torchvision state dict); without it
  the backbone starts from random weights, which is not the original's experiment.
"""

from spinal_jax.configs import transfer


def get_config():
    """The grid entry ``svhn_vgg19_bn``."""
    return transfer(
        "vgg19_bn",
        "svhn_cropped",
        name="svhn_vgg19_bn",
        batch_size=28,
        learning_rate=1e-3,
        epochs=50,
        model_overrides={"variant": "v1", "width": 20},
    )
