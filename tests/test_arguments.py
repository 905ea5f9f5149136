import argparse
import dataclasses

import pytest

from tfpvae._arguments import Parser, UsageError, add_config_flags, config_fields, config_from_args, flag
from tfpvae.config import CHOICES, VAEConfig


def _parser(defaults=None):
    p = Parser(prog="test")
    add_config_flags(p, defaults)
    return p


def test_every_config_field_but_shape_seed_and_options_is_a_flag_with_the_config_default():
    p = _parser()
    names = {f.name for f in dataclasses.fields(VAEConfig)} - {"input_shape", "seed", "options"}
    assert {f.name for f in config_fields()} == names
    args = p.parse_args([])
    assert config_from_args(args, input_shape=(28, 28, 1)) == VAEConfig()
    flags = {a.option_strings[0] for a in p._actions if a.option_strings and a.dest != "help"}
    assert flags == {flag(n) for n in names} | {"--option"}


def test_options_are_key_value_pairs_with_json_values():
    args = _parser().parse_args(["--option", "blocks=3", "--option", "norm=batch", "--option", "widths=[8, 16]"])
    config = config_from_args(args, input_shape=(8, 8, 1))
    assert config.options == {"blocks": 3, "norm": "batch", "widths": [8, 16]}


def test_an_option_without_an_equals_sign_is_a_one_line_usage_error(capsys):
    with pytest.raises(SystemExit) as exit_info:
        _parser().parse_args(["--option", "blocks"])
    assert exit_info.value.code == 2
    assert "expected a KEY=VALUE pair with finite numbers, got 'blocks'" in capsys.readouterr().err


def test_architecture_and_prior_choices_are_the_registered_names():
    from tfpvae import registry

    @registry.register_network("args_test_net")
    def builder(config, role):  # pragma: no cover - never built
        raise AssertionError

    try:
        p = _parser()
        arch = next(a for a in p._actions if a.dest == "architecture")
        prior = next(a for a in p._actions if a.dest == "prior")
        assert tuple(arch.choices) == registry.networks.names()
        assert tuple(arch.choices)[:3] == ("mlp", "conv", "dcgan") and arch.choices[-1] == "args_test_net"
        assert tuple(prior.choices) == registry.priors.names()
    finally:
        registry.networks.unregister("args_test_net")


def test_flag_values_reach_the_config_with_their_types():
    args = _parser().parse_args(
        ["--latent-dim", "3", "--prior", "mixture", "--dropout", "0.25", "--train-samples", "4"]
    )
    config = config_from_args(args, input_shape=(8, 8, 1), seed=5)
    assert config == VAEConfig(
        input_shape=(8, 8, 1), latent_dim=3, prior="mixture", dropout=0.25, train_samples=4, seed=5
    )


def test_choices_come_from_the_config():
    p = _parser()
    for name, names in CHOICES.items():
        action = next(a for a in p._actions if a.dest == name)
        assert tuple(action.choices) == names


def test_other_defaults_are_used():
    args = _parser(VAEConfig(latent_dim=32, learning_rate=1e-3)).parse_args([])
    assert args.latent_dim == 32 and args.learning_rate == 1e-3


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--dropout", "1.5"], "argument --dropout: expected a number in [0.0, 1.0), got '1.5'"),
        (["--latent-dim", "0"], "argument --latent-dim: expected an integer >= 1, got '0'"),
        (["--latent-dim", "two"], "argument --latent-dim: expected an integer >= 1, got 'two'"),
        (["--learning-rate", "0"], "argument --learning-rate: expected a number > 0.0, got '0'"),
    ],
)
def test_bad_values_are_refused_naming_the_flag(argv, message, capsys):
    with pytest.raises(SystemExit) as e:
        _parser().parse_args(argv)
    assert e.value.code == 2
    assert message in capsys.readouterr().err


def test_type_names_come_from_the_config_rules():
    names = {a.dest: a.type.__name__ for a in _parser()._actions if a.type is not None}
    assert names == {
        "latent_dim": "integer >= 1",
        "num_components": "integer >= 1",
        "beta": "number >= 0.0",
        "filters": "integer >= 1",
        "hidden_units": "integer >= 1",
        "dropout": "number in [0.0, 1.0)",
        "learning_rate": "number > 0.0",
        "posterior_scale_floor": "number >= 0.0",
        "train_samples": "integer >= 1",
        "flow_layers": "integer >= 1",
        "flow_hidden_units": "integer >= 1",
        "options": "KEY=VALUE pair with finite numbers",
    }


def test_usage_error_is_a_value_error():
    assert issubclass(UsageError, ValueError) and not issubclass(argparse.ArgumentError, UsageError)
