"""AlexNet (ImageNet) on 10 Monkey Species with its classifier or `classifier = SpinalNet_ResNet` (V1,
seg 4608, width 20) (`Jupyter Notebooks/alexnet-spinalnet-fc-tl-10-monkey.ipynb`, ORIGINAL §2.7).

Command: ``spinal-jax train --config monkeys10_alexnet --workdir runs/monkeys10_alexnet``
(``--config.head=spinal`` for the SpinalNet head; both heads and seeds: ``spinal-jax grid monkeys10_alexnet --seeds 3 --workdir runs``)

Expected runtime on one H100: ≈3–6 min per run (estimate).

Original's reported accuracy: spinal 92.28% best validation (notebook output); default: none.

Quirks and choices:
- Two stages, both lr 1e-2 × 10 (fresh optimizer each).
- Resizing/cropping/flipping and normalisation of this streamed dataset are the original's
  torchvision transforms, applied on the host by spinal_jax.data (info(name).train_preprocess /
  eval_preprocess); train_augment/eval_preprocess stay empty.
- Needs ImageNet weights: pass `--config.init_checkpoint=PATH` (torchvision state dict); without it
  the backbone starts from random weights, which is not the original's experiment.
"""

from spinal_jax.configs import transfer


def get_config():
    """The grid entry ``monkeys10_alexnet``."""
    return transfer(
        "alexnet",
        "monkeys10",
        name="monkeys10_alexnet",
        batch_size=40,
        stages=((1e-2, 10), (1e-2, 10)),
    )
