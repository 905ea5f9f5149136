import numpy as np
import pytest

import tfpvae
from tfpvae import latent, uncertainty


@pytest.fixture(scope="module")
def images(digits):
    return digits[1][0][:6]


@pytest.mark.parametrize(
    "method, function, args",
    [
        ("interpolate", latent.interpolate, lambda x: (x[:2], x[2:4])),
        ("traverse", latent.traverse, lambda x: (x[:1],)),
        ("manifold_grid", latent.manifold_grid, lambda x: ()),
        ("posterior_uncertainty", uncertainty.posterior_uncertainty, lambda x: (x,)),
    ],
)
def test_old_methods_warn_and_give_what_the_functions_give(trained_digits, images, method, function, args):
    tfpvae.VAE  # noqa: B018 - resolving a model name installs the aliases
    with pytest.warns(FutureWarning, match=rf"VAE\.{method} is deprecated .* removed in tfpvae 0\.3"):
        old = getattr(trained_digits, method)(*args(images))
    new = function(trained_digits, *args(images))
    old, new = (vars(r) if hasattr(r, "__dataclass_fields__") else r._asdict() for r in (old, new))
    assert old.keys() == new.keys()
    for key in old:
        if isinstance(old[key], np.ndarray):
            np.testing.assert_array_equal(old[key], new[key])


def test_sampling_the_aggregate_posterior_the_old_way_warns_and_matches(trained_digits, digits):
    x = digits[0][0][:300]
    with pytest.warns(FutureWarning, match="fit_aggregate_posterior"):
        gmm = tfpvae.VAE.fit_aggregate_posterior(trained_digits, x, num_components=3, seed=0)
    with pytest.warns(FutureWarning, match="sample_aggregate_posterior"):
        old = trained_digits.sample(5, seed=1, source="aggregate")
    np.testing.assert_array_equal(old, latent.sample_aggregate_posterior(trained_digits, gmm, 5, seed=1))
    object.__delattr__(trained_digits, "aggregate_posterior_")  # the shared model stays as it was


def test_sampling_the_prior_does_not_warn(trained_digits, recwarn):
    trained_digits.sample(3, seed=0)
    assert not [w for w in recwarn if issubclass(w.category, FutureWarning)]
