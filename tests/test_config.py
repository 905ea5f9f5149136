import json

import pytest

from tfpvae.config import PRIORS, VAEConfig


def test_defaults_suit_mnist():
    c = VAEConfig()
    assert c.input_shape == (28, 28, 1)
    assert c.architecture == "mlp" and c.prior == "normal" and c.beta == 1.0
    assert c.latent_dim == 16 and c.hidden_units == 256 and c.activation == "swish"


def test_json_round_trip_is_identity():
    c = VAEConfig(input_shape=(32, 32, 3), latent_dim=4, prior="mixture", num_components=3, train_samples=5, seed=7)
    assert VAEConfig.from_json(c.to_json()) == c
    assert json.loads(c.to_json())["input_shape"] == [32, 32, 3]


def test_replace_rejects_unknown_fields():
    with pytest.raises(TypeError, match="latentdim"):
        VAEConfig().replace(latentdim=3)


@pytest.mark.parametrize(
    "field,value,match",
    [
        ("latent_dim", 0, "`latent_dim` must be an int >= 1; got 0"),
        ("latent_dim", 2.5, "`latent_dim` must be an int"),
        (
            "prior",
            "vampire",
            "`prior` 'vampire' is not a registered prior in this process \\(registered: "
            + ", ".join(map(repr, PRIORS)),
        ),
        ("architecture", "resnet", "`architecture` 'resnet' is not a registered network .*: 'mlp', 'conv', 'dcgan'"),
        ("beta", -1.0, "`beta` must be a finite number"),
        ("input_shape", (28, 28), r"`input_shape` must be \(height, width, channels\)"),
        ("learning_rate", 0.0, "`learning_rate`"),
        ("train_samples", 0, "`train_samples` must be an int >= 1; got 0"),
        ("train_samples", 2.0, "`train_samples` must be an int"),
        ("dropout", -0.1, "`dropout` must be a finite number in \\[0.0"),
        ("dropout", 1.0, r"`dropout` must be a finite number in \[0.0, 1.0\); got 1.0"),
        ("dropout", "0.2", "`dropout` must be a number"),
    ],
)
def test_bad_values_name_the_field(field, value, match):
    with pytest.raises((ValueError, TypeError), match=match):
        VAEConfig().replace(**{field: value})


def test_vamp_prior_needs_a_vae():
    with pytest.raises(ValueError, match="`prior='vamp'` needs model_type='vae'"):
        VAEConfig(prior="vamp", model_type="ae")


def test_from_dict_rejects_unknown_keys():
    with pytest.raises(ValueError, match="Unknown config field"):
        VAEConfig.from_dict({**VAEConfig().to_dict(), "evil": 1})


def test_train_samples_defaults_to_the_elbo_and_needs_a_vae():
    assert VAEConfig().train_samples == 1
    old = VAEConfig().to_dict()
    del old["train_samples"]  # a config.json written before the field existed
    assert VAEConfig.from_dict(old) == VAEConfig()
    with pytest.raises(ValueError, match="`train_samples` > 1 needs model_type='vae'"):
        VAEConfig(model_type="ae", train_samples=2)


def test_options_hold_json_values_and_round_trip():
    config = VAEConfig(options={"blocks": 3, "widths": (8, 16), "norm": None})
    assert config.options == {"blocks": 3, "widths": [8, 16], "norm": None}  # a tuple is stored as JSON's list
    again = VAEConfig.from_json(config.to_json())
    assert again == config and hash(again) == hash(config)
    assert VAEConfig().options == {} and VAEConfig().to_dict()["options"] == {}


@pytest.mark.parametrize(
    "options, match",
    [
        ([("blocks", 3)], "`options` must be a dict of JSON values; got list"),
        ({1: "a"}, "`options` keys must be strings; got \\[1\\]"),
        ({"f": object()}, "`options` must hold only JSON values"),
        ({"x": float("nan")}, "`options` must hold only JSON values"),
    ],
)
def test_options_that_json_cannot_hold_are_refused(options, match):
    with pytest.raises(TypeError, match=match):
        VAEConfig(options=options)


def test_a_registered_network_name_is_accepted_and_an_unregistered_one_says_what_to_import():
    from tfpvae import registry

    with pytest.raises(
        registry.UnregisteredNameError,
        match="import the module that registers it with @tfpvae.register_network\\('config_test_net'\\)",
    ):
        VAEConfig(architecture="config_test_net")
    registry.register_network("config_test_net")(lambda config, role: None)
    try:
        assert VAEConfig(architecture="config_test_net").architecture == "config_test_net"
    finally:
        registry.networks.unregister("config_test_net")


# --------------------------------------------------------------------------- found by tests/test_fuzz.py


def test_from_dict_and_from_json_refuse_any_input_naming_the_argument():
    with pytest.raises(TypeError, match=r"`data` keys must be config field names \(str\); got \[1\]"):
        VAEConfig.from_dict({1: 2, "x": 3})  # sorting the unknown keys raised a TypeError naming nothing
    with pytest.raises(ValueError, match="`text` is not valid JSON: Expecting"):
        VAEConfig.from_json("{not json")
    with pytest.raises(ValueError, match="`text` is not valid JSON: it is nested too deeply"):
        VAEConfig.from_json('{"options": {"a": ' + "[" * 100_000 + "]" * 100_000 + "}}")  # was RecursionError
    with pytest.raises(ValueError, match="`learning_rate` must be a finite number > 0.0; got inf"):
        VAEConfig.from_json('{"learning_rate": 1' + "0" * 400 + "}")  # was OverflowError


def test_options_may_not_nest_deeper_than_a_config_can_be_copied():
    deep: list = []
    for _ in range(40):
        deep = [deep]
    # Accepted before, then to_json() and hash() raised RecursionError from dataclasses.asdict at ~300 levels.
    with pytest.raises(ValueError, match="`options` nests lists and dicts more than 32 levels deep"):
        VAEConfig(options={"a": deep})
    nested: list = []
    for _ in range(30):
        nested = [nested]
    config = VAEConfig(options={"a": nested})
    assert VAEConfig.from_json(config.to_json()) == config


# --------------------------------------------------------------------------- found in review


def test_numpy_numbers_are_stored_as_the_python_numbers_they_equal():
    import numpy as np

    fields = {"latent_dim": 2, "num_components": 3, "hidden_units": 8, "beta": 0.5, "dropout": 0.25, "seed": 7}
    plain = VAEConfig(**fields)
    numpy = VAEConfig(
        latent_dim=np.int64(2),
        num_components=np.int32(3),
        hidden_units=np.uint8(8),
        beta=np.float32(0.5),
        dropout=np.float64(0.25),
        seed=np.int64(7),
    )
    # Stored unconverted before: to_json() and hash() raised "Object of type int64 is not JSON serializable".
    assert numpy == plain and hash(numpy) == hash(plain) and numpy.to_json() == plain.to_json()
    assert all(type(getattr(numpy, name)) is type(value) for name, value in fields.items())
    assert VAEConfig.from_json(numpy.to_json()) == plain
    # An int for a float field is stored as the float: equal configs hash alike.
    assert type(VAEConfig(beta=1).beta) is float and hash(VAEConfig(beta=1)) == hash(VAEConfig(beta=1.0))


def test_seed_past_int32_is_refused_naming_it():
    assert VAEConfig(seed=2**31 - 1).seed == 2**31 - 1
    # Accepted before; a seed past ~9.2e15 then overflowed deep inside tf_keras when the model was built.
    for seed in (2**31, 2**63):
        with pytest.raises(ValueError, match=rf"`seed` must be an int in \[0, 2147483647\]; got {seed}"):
            VAEConfig(seed=seed)
    with pytest.raises(ValueError, match=r"`seed` must be an int in \[0, 2147483647\]; got -1"):
        VAEConfig(seed=-1)


@pytest.mark.parametrize("prior", ["learned_normal", "mixture", "flow"])
def test_an_autoencoder_refuses_a_trainable_prior(prior):
    # Accepted before: with no KL term nothing trains the prior, and sample() drew from its initial values.
    with pytest.raises(ValueError, match=rf"`prior='{prior}'` has trainable weights, which model_type='ae' never"):
        VAEConfig(prior=prior, model_type="ae")
    assert VAEConfig(prior=prior).model_type == "vae"
    assert VAEConfig(prior="normal", model_type="ae").prior == "normal"
