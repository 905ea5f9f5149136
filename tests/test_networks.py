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
