"""Wide-ResNet-101-2 (ImageNet) on Fashion-MNIST with its fc or the SpinalNet head (V4: no activation,
width 1024) (`Jupyter Notebooks/transfer-learning-on-fashion-mnist-dataset.ipynb`, ORIGINAL §2.7).

Command: ``spinal-jax train --config fashion_mnist_tl_wrn101 --workdir runs/fashion_mnist_tl_wrn101``
(``--config.head=spinal`` for the SpinalNet head; both heads and seeds: ``spinal-jax grid fashion_mnist_tl_wrn101 --seeds 3 --workdir runs``)

Expected runtime on one H100: ≈1–2 h per run (estimate).

Original's reported accuracy: spinal 94.76% test at best valid (notebook output); default: none.

Quirks and choices:
- Validation = every 10th train image (idx % 10 == 0); test at the best validation epoch.
- Two stages: 1e-2 × 5 then 1e-3 × 5, batch 200.
- Grayscale Fashion-MNIST is repeated to 3 channels (``to_rgb``: the original's ImageFolder loaded
  the PNGs as RGB); RandomAffine(10, translate=(0.2, 0.2)) is ``random_affine`` (nearest, fill 0).
- Needs ImageNet weights: pass `--config.init_checkpoint=PATH` (torchvision state dict); without it
  the backbone starts from random weights, which is not the original's experiment.
"""

from spinal_jax.configs import NORM_HALF, transfer


def get_config():
    """The grid entry ``fashion_mnist_tl_wrn101``."""
    return transfer(
        "wide_resnet101_2",
        "fashion_mnist",
        name="fashion_mnist_tl_wrn101",
        batch_size=200,
        stages=((1e-2, 5), (1e-3, 5)),
        protocol="clean",
        validation="mod10:0",
        model_overrides={"variant": "v4", "width": 1024},
        train_augment=(
            "to_rgb|resize((120, 120))|hflip|random_affine(10, translate=(0.2, 0.2))|"
            "random_resized_crop(112, scale=(0.95, 1.0))|" + NORM_HALF
        ),
        eval_preprocess="to_rgb|resize((112, 112))|" + NORM_HALF,
    )
