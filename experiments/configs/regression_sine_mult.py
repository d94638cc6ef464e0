"""The §2.8 toy regression (sine multiplication of 8 N(0,1) inputs) with the normal 8-200-100-1
LeakyReLU net (`head=default`) or the 6-layer LeakyReLU SpinalNet (`head=spinal`)
(`Regression/Regression_NN_and_SpinalNet.py`).

Command: ``spinal-jax train --config regression_sine_mult --workdir runs/regression_sine_mult``
(``--config.head=spinal`` for the SpinalNet head; both heads and seeds: ``spinal-jax grid regression_sine_mult --seeds 3 --workdir runs``)

Expected runtime on one H100: ≈10–30 s per run (estimate; CPU is fine).

Original's reported accuracy: MSE (last minibatch loss at epoch 200; not an accuracy): spinal 0.0023
(min 0.000910), normal 0.0041 (min 0.001554) (script docstring).

Quirks and choices:
- Targets as the docstring describes (no (1000,1000) broadcast, quirk 1.9.7 not reproduced).
- The original fits all 1000 samples and reports training loss; here 10% are held out (clean
  protocol only).
- The SpinalNet head reuses fc3/fc4 weights as the original (§1.5).
"""

from spinal_jax.configs import regression


def get_config():
    """The grid entry ``regression_sine_mult``."""
    return regression("sine_multiplication", name="regression_sine_mult")
