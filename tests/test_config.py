"""Config: construction checks, overrides, loading, JSON round trip, validation split."""

import json
import textwrap

import numpy as np
import pytest

from spinal_jax.train.config import (
    Config,
    apply_overrides,
    field_names,
    load_config,
    split_validation,
)


def _cfg(**kw):
    base = dict(model="vgg5", dataset="fashion_mnist", epochs=200, batch_size=100, learning_rate=0.005)
    base.update(kw)
    return Config(**base)


def test_defaults_and_name():
    c = _cfg(dataset="emnist/digits")
    assert c.name == "emnist_digits_vgg5"
    assert (c.head, c.protocol, c.seed, c.optimizer) == ("default", "paper", 0, "adam")
    assert c.stage_plan() == ((0.005, 200),)
    for key in ("model", "dataset", "head", "epochs", "batch_size", "learning_rate", "seed", "protocol"):
        assert key in field_names()


@pytest.mark.parametrize(
    "kw, key",
    [
        (dict(batch_size=0), "batch_size"),
        (dict(epochs=0), "epochs"),
        (dict(head="wide"), "head"),
        (dict(protocol="test"), "protocol"),
        (dict(optimizer="rmsprop"), "optimizer"),
        (dict(lr_rule="cosine"), "lr_rule"),
        (dict(precision="fp16"), "precision"),
        (dict(loss="hinge"), "loss"),
        (dict(epochs="3"), "epochs"),
        (dict(epochs=True), "epochs"),
        (dict(learning_rate=-1.0), "learning_rate"),
        (dict(learning_rate="fast"), "learning_rate"),
        (dict(momentum=0.5), "momentum"),  # momentum with Adam
        (dict(optimizer="sgd", momentum=1.0), "momentum"),
        (dict(num_classes=0), "num_classes"),
        (dict(lr_rule="random_on_plateau"), "lr_scale"),
        (dict(lr_rule="random_every_epoch", lr_scale=0.1), "lr_start_epoch"),
        (dict(stages=((0.005, 100),)), "epochs"),
        (dict(stages=((0.001, 300),)), "learning_rate"),
        (dict(stages=((0.005, 0),)), "stages"),
        (dict(validation="every10"), "validation"),
        (dict(validation="mod10:10"), "validation"),
        (dict(validation="fraction:1.5"), "validation"),
        (dict(protocol="clean", validation="none"), "validation"),
        (dict(model_overrides=(("a", 1), ("a", 2))), "model_overrides"),
        (dict(model_overrides=((1, 2),)), "model_overrides"),
        (dict(tensorboard="yes"), "tensorboard"),
        (dict(stream_workers=-1), "stream_workers"),
    ],
)
def test_bad_values_name_the_key(kw, key):
    with pytest.raises(ValueError, match=key):
        _cfg(**kw)


def test_unknown_key_in_from_dict_and_replace():
    c = _cfg()
    with pytest.raises(ValueError, match="bogus"):
        Config.from_dict({**c.to_dict(), "bogus": 1})
    with pytest.raises(ValueError, match="missing required"):
        Config.from_dict({"model": "x"})
    with pytest.raises(ValueError, match="unknown config key 'bogus'"):
        c.replace(bogus=1)


def test_overrides_parse_by_field_type():
    c = _cfg()
    o = apply_overrides(
        c,
        [
            "--config.head=spinal",
            "--config.epochs=3",
            "--config.seed=0",
            "--config.learning_rate=1e-3",
            "--config.num_classes=None",
            "--config.lr_epochs=(1, 2)",
            "--config.tensorboard=false",
            "--config.train_augment=rotate(10)|normalize(0.5, 0.5)",
            "config.model_overrides={'dropout': 0.3}",
            "--config.model_overrides.width=64",
            "--config.name='quoted'",
        ],
    )
    assert (o.head, o.epochs, o.seed, o.learning_rate) == ("spinal", 3, 0, 1e-3)
    assert isinstance(o.learning_rate, float) and o.num_classes is None
    assert o.lr_epochs == (1, 2) and o.tensorboard is False
    assert o.train_augment == "rotate(10)|normalize(0.5, 0.5)"
    assert o.model_kwargs() == {"dropout": 0.3, "width": 64}
    assert o.name == "quoted"
    assert c.head == "default"  # original untouched (frozen)
    assert apply_overrides(c, {"head": "spinal", "epochs": 2}) == c.replace(head="spinal", epochs=2)


@pytest.mark.parametrize(
    "override, key",
    [
        ("--config.nope=1", "nope"),
        ("--config.batch_size=0", "batch_size"),
        ("--config.batch_size=abc", "batch_size"),
        ("--config.epochs=2.5", "epochs"),
        ("--config.head=both", "head"),
        ("--config.tensorboard=maybe", "tensorboard"),
        ("--config.lr_epochs=1,x", "lr_epochs"),
        ("head", "KEY=VALUE"),
    ],
)
def test_bad_overrides(override, key):
    with pytest.raises(ValueError, match=key):
        apply_overrides(_cfg(), [override])


def test_unknown_override_lists_valid_keys():
    with pytest.raises(ValueError, match=r"valid keys: .*batch_size"):
        apply_overrides(_cfg(), ["--config.batchsize=3"])


def test_staged_learning_rate_override_moves_first_stage():
    c = _cfg(epochs=40, learning_rate=1e-2, optimizer="sgd", momentum=0.9, stages=((1e-2, 20), (1e-3, 20)))
    o = apply_overrides(c, ["--config.learning_rate=0.05", "--config.epochs=25"])
    assert o.stages == ((0.05, 20), (1e-3, 20))
    assert o.stage_plan() == ((0.05, 20), (1e-3, 5))


def test_json_round_trip():
    c = _cfg(stages=((0.005, 100), (0.001, 100)), model_overrides={"b": (1, 2), "a": 1.5})
    d = json.loads(json.dumps(c.to_dict()))
    assert Config.from_dict(d) == c
    assert c.model_overrides == (("a", 1.5), ("b", (1, 2)))
    assert hash(c) == hash(Config.from_dict(d))


def test_load_config_from_path_and_errors(tmp_path):
    f = tmp_path / "my_cfg.py"
    f.write_text(
        textwrap.dedent(
            """
            from spinal_jax.train.config import Config

            def get_config():
                return Config(model="digits_mlp", dataset="digits", epochs=2, batch_size=8,
                              learning_rate=1e-3)
            """
        )
    )
    c = load_config(str(f))
    assert c.model == "digits_mlp" and c.epochs == 2
    bad = tmp_path / "bad.py"
    bad.write_text("x = 1\n")
    with pytest.raises(ValueError, match="get_config"):
        load_config(str(bad))
    with pytest.raises(ValueError, match="does not exist"):
        load_config(str(tmp_path / "missing.py"))
    with pytest.raises(ValueError, match="unknown config 'no_such_config_xyz'"):
        load_config("no_such_config_xyz")
    with pytest.raises(ValueError, match="valid module name"):
        load_config("a-b")


def test_split_validation():
    tr, va = split_validation(25, "mod10:0")
    np.testing.assert_array_equal(va, [0, 10, 20])
    assert len(tr) == 22 and not set(tr) & set(va)
    _, va4 = split_validation(25, "mod10:4")
    np.testing.assert_array_equal(va4, [4, 14, 24])
    tr, va = split_validation(100, "fraction:0.1", seed=3)
    assert len(va) == 10 and len(tr) == 90 and not set(tr) & set(va)
    np.testing.assert_array_equal(va, split_validation(100, "fraction:0.1", seed=3)[1])
    assert not np.array_equal(va, split_validation(100, "fraction:0.1", seed=4)[1])
    assert len(split_validation(7, "none")[1]) == 0
    with pytest.raises(ValueError, match="data loader"):
        split_validation(10, "split:validation")
    with pytest.raises(ValueError, match="n >= 1"):
        split_validation(0, "mod10:0")
