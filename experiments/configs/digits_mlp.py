"""The demo: SpinalNet MLP vs a plain MLP on scikit-learn's embedded 8×8 digits (no network, a few
seconds on a CPU; `spinal-jax demo` runs both heads).

Command: ``spinal-jax train --config digits_mlp --workdir runs/digits_mlp``
(``--config.head=spinal`` for the SpinalNet head; both heads and seeds: ``spinal-jax grid digits_mlp --seeds 3 --workdir runs``)

Expected runtime on one H100: a few seconds per run on a CPU (estimate); seconds on an H100.

Original's reported accuracy: none (not in the original; target ≥ 95% test accuracy with both
heads).

Quirks and choices:
- Pixels 0..255 scaled to [0, 1]; Adam 1e-3, batch 32, 30 epochs, constant lr.
"""

from spinal_jax.configs import SCALE_ONLY

from spinal_jax.train.config import Config


def get_config():
    """The grid entry ``digits_mlp``."""
    return Config(
        name="digits_mlp",
        model="digits_mlp",
        dataset="digits",
        epochs=30,
        batch_size=32,
        eval_batch_size=512,
        optimizer="adam",
        learning_rate=1e-3,
        train_augment=SCALE_ONLY,
        eval_preprocess=SCALE_ONLY,
        validation="fraction:0.1",
        log_every_steps=10,
    )
