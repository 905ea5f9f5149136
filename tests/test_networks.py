"""Encoder and decoder bodies: output shapes for every architecture, seeding, the lean default."""

from __future__ import annotations

import numpy as np
import pytest

from tfpvae.config import ARCHITECTURES, VAEConfig
from tfpvae.networks import decoder_body, encoder_body


@pytest.mark.parametrize("architecture", ARCHITECTURES)
@pytest.mark.parametrize("shape", [(8, 8, 1), (28, 28, 1), (13, 17, 3)])
def test_bodies_map_to_the_right_shapes(architecture, shape):
    config = VAEConfig(input_shape=shape, latent_dim=3, architecture=architecture, filters=4, hidden_units=8, seed=0)
    enc, dec = encoder_body(config), decoder_body(config)
    x = np.random.default_rng(0).random((2, *shape)).astype(np.float32)
    assert enc(x).shape == (2, 8)
    assert dec(np.zeros((5, 3), np.float32)).shape == (5, int(np.prod(shape)))


def test_seeded_config_builds_identical_weights():
    config = VAEConfig(latent_dim=4, seed=3)
    a, b = decoder_body(config), decoder_body(config)
    for wa, wb in zip(a.get_weights(), b.get_weights()):
        np.testing.assert_array_equal(wa, wb)


def test_default_is_the_lean_mlp():
    # The benchmark (docs/benchmarks.md) chose it: 784-512-256 encoder, 256-512-784 decoder.
    config = VAEConfig()
    assert config.architecture == "mlp"
    enc, dec = encoder_body(config), decoder_body(config)
    widths = [layer.units for layer in enc.layers if hasattr(layer, "units")]
    assert widths == [2 * config.hidden_units, config.hidden_units]
    widths = [layer.units for layer in dec.layers if hasattr(layer, "units")]
    assert widths == [config.hidden_units, 2 * config.hidden_units, 784]


@pytest.mark.parametrize("architecture", ["mlp", "conv"])
def test_dropout_acts_only_in_training_and_rescales_the_kept_units(architecture):
    rate = 0.4
    config = VAEConfig(input_shape=(8, 8, 1), architecture=architecture, filters=4, hidden_units=64, seed=0)
    plain, dropped = encoder_body(config), encoder_body(config.replace(dropout=rate))
    dropped.set_weights(plain.get_weights())  # dropout adds no weights: the same network
    x = np.random.default_rng(0).random((32, 8, 8, 1)).astype(np.float32)
    reference = plain(x, training=True).numpy()
    # Inference (Keras' default outside fit) sees the whole network.
    np.testing.assert_allclose(dropped(x).numpy(), reference, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(dropped(x, training=False).numpy(), reference, rtol=1e-6, atol=1e-6)
    out = dropped(x, training=True).numpy()
    kept = out != 0
    # The last layer's mask: about `rate` of the units zeroed, the rest scaled by 1 / (1 - rate).
    assert abs((1 - kept.mean()) - rate) < 0.05  # 2,048 units: 4.6 standard errors
    if architecture == "conv":  # one dropout layer, so the kept units are exact rescalings
        np.testing.assert_allclose(out[kept], reference[kept] / (1 - rate), rtol=1e-5, atol=1e-6)
    assert not np.allclose(dropped(x, training=True).numpy(), out)  # a fresh mask every call


def test_dropout_layers_follow_every_hidden_dense_layer():
    config = VAEConfig(dropout=0.2, seed=0)
    for body, hidden in ((encoder_body(config), 2), (decoder_body(config), 2)):
        names = [type(layer).__name__ for layer in body.layers]
        assert names.count("Dropout") == hidden
        # Each Dropout comes straight after a hidden Dense; the output layer keeps no mask.
        assert all(names[i - 1] == "Dense" for i, n in enumerate(names) if n == "Dropout")
        assert all(layer.rate == 0.2 for layer in body.layers if type(layer).__name__ == "Dropout")
    assert "Dropout" not in [type(layer).__name__ for layer in encoder_body(VAEConfig()).layers]


# --------------------------------------------------------------------------- found in review


def test_a_registered_body_must_have_one_output_a_list_of_one_being_that_output():
    import tfpvae
    from tfpvae._keras import tfk, tfkl
    from tfpvae.networks import build_body

    def builder(config, role):
        images = tfkl.Input(config.input_shape)
        features = tfkl.Flatten()(images)
        outputs = [tfkl.Dense(n)(features) for n in config.options["widths"]]
        return tfk.Model(images, outputs)

    tfpvae.register_network("test_outputs")(builder)
    try:
        config = VAEConfig(input_shape=(4, 4, 1), latent_dim=2, architecture="test_outputs", options={"widths": [8, 8]})
        # Was AttributeError: 'list' object has no attribute 'shape'.
        with pytest.raises(ValueError, match=r"^The encoder of network 'test_outputs' must have one output; got 2\.$"):
            build_body(config, "encoder")
        body = build_body(config.replace(options={"widths": [5]}), "encoder")
        assert body(np.zeros((3, 4, 4, 1), np.float32)).shape == (3, 5)
    finally:
        tfpvae.registry.networks.unregister("test_outputs")


def test_the_largest_seed_a_config_takes_builds_reproducible_bodies():
    # Per-layer seeds are seed * 1000 + index: VAEConfig's int32 bound keeps them within tf_keras' int64.
    config = VAEConfig(input_shape=(4, 4, 1), latent_dim=2, hidden_units=4, seed=2**31 - 1)
    for body in (encoder_body, decoder_body):
        for wa, wb in zip(body(config).get_weights(), body(config).get_weights()):
            np.testing.assert_array_equal(wa, wb)
