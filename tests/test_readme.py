"""README.md's Python examples run as written (so the front page cannot drift from the API)."""

import pathlib
import re

import jax
import numpy as np
import pytest

README = pathlib.Path(__file__).resolve().parent.parent / "README.md"


def _python_blocks() -> list[str]:
    blocks = re.findall(r"^```python\n(.*?)^```", README.read_text(), flags=re.S | re.M)
    assert len(blocks) == 2, "README's Python examples changed: update this test"
    return blocks


def test_layer_example_runs():
    namespace: dict = {}
    exec(_python_blocks()[0], namespace)
    assert namespace["logits"].shape == (8, 10)
    new_stats = namespace["updates"]["batch_stats"]
    old_stats = namespace["variables"]["batch_stats"]
    # A training call moves the running BatchNorm statistics; the eval call reads them.
    assert any(not np.array_equal(a, b) for a, b in zip(_leaves(new_stats), _leaves(old_stats), strict=True))


def test_state_dict_example_loads_a_saved_state_dict(tmp_path, monkeypatch):
    torch = pytest.importorskip("torch")
    from spinal_jax import models
    from spinal_jax.interop.torch import to_state_dict

    model = models.get("vgg5", num_classes=10, head="spinal")
    saved = model.init(jax.random.key(3), np.zeros((1, 28, 28, 1), np.float32))
    torch.save({k: torch.from_numpy(np.array(v)) for k, v in to_state_dict(model, saved).items()},
               tmp_path / "SpinalVGG_fashion.pth")
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(_python_blocks()[1], namespace)
    assert jax.tree.structure(namespace["variables"]) == jax.tree.structure(saved)
    for a, b in zip(_leaves(namespace["variables"]), _leaves(saved), strict=True):
        np.testing.assert_array_equal(a, b)


def _leaves(tree) -> list[np.ndarray]:
    return [np.asarray(x) for x in jax.tree.leaves(tree)]
