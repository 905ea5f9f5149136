"""tfpvae.figures: which images each figure is drawn from, on a split stored in class order."""

import matplotlib.pyplot as plt
import numpy as np
import pytest

from tfpvae import latent
from tfpvae.figures import make_figure
from tfpvae.model import VAE
from tfpvae.subsets import evenly_spaced


@pytest.fixture(scope="module")
def sorted_digits(digits):
    """The digits test split sorted by class, as binarized_mnist's test split is stored."""
    _, (x, y) = digits
    order = np.argsort(y, kind="stable")
    return x[order], y[order]


@pytest.fixture
def spied(monkeypatch):
    """An untrained 4-d VAE; its reconstruct and `latent.manifold_grid` record the images they get."""
    model = VAE(input_shape=(8, 8, 1), latent_dim=4, architecture="mlp", seed=0)
    seen = {}
    real_reconstruct, real_grid = model.reconstruct, latent.manifold_grid

    def reconstruct(x):
        seen["reconstruct"] = np.array(x)
        return real_reconstruct(x)

    def manifold_grid(m, *args, **kwargs):
        assert m is model
        seen["manifold_grid"] = np.array(kwargs["x"] if "x" in kwargs else args[3])
        return real_grid(m, *args, **kwargs)

    monkeypatch.setattr(model, "reconstruct", reconstruct)
    monkeypatch.setattr(latent, "manifold_grid", manifold_grid)
    return model, seen


def test_reconstructions_without_labels_span_a_sorted_split(sorted_digits, spied):
    x, y = sorted_digits
    model, seen = spied
    plt.close(make_figure("reconstructions", model, x, num_images=8))
    np.testing.assert_array_equal(seen["reconstruct"], x[evenly_spaced(len(x), 8)])
    # The first 8 images are all zeros; the spread ones cover the classes from first to last.
    assert set(y[:8]) == {0}
    assert len(set(y[evenly_spaced(len(x), 8)])) >= 7


def test_reconstructions_with_labels_reconstruct_one_image_per_class(sorted_digits, spied):
    x, y = sorted_digits
    model, seen = spied
    plt.close(make_figure("reconstructions", model, x, y))
    _, first = np.unique(y, return_index=True)
    np.testing.assert_array_equal(seen["reconstruct"], x[first])  # 10 images, not all 359


def test_reconstructions_refuse_labels_that_do_not_match_the_images(sorted_digits, spied):
    x, y = sorted_digits
    model, _ = spied
    for labels in (y[:5], np.r_[y, y], y[:, None]):
        with pytest.raises(ValueError, match=rf"`y` must have shape \({len(x)},\)"):
            make_figure("reconstructions", model, x, labels)


def test_manifold_plane_comes_from_images_spread_over_the_split(sorted_digits, spied):
    x, _ = sorted_digits
    model, seen = spied
    plt.close(make_figure("manifold", model, x, max_points=50, grid_size=3))
    np.testing.assert_array_equal(seen["manifold_grid"], x[evenly_spaced(len(x), 50)])


def test_histogram_and_roc_score_the_binarisation_asked_for(sorted_digits, spied, monkeypatch):
    import tfpvae.anomaly

    x, _ = sorted_digits
    model, _ = spied
    calls = []
    real = tfpvae.anomaly.compute_scores
    monkeypatch.setattr(tfpvae.anomaly, "compute_scores", lambda *a, **kw: calls.append(kw) or real(*a, **kw))
    for kind in ("histogram", "roc"):
        plt.close(make_figure(kind, model, x[:20], x_anomalous=1.0 - x[:20], num_samples=4, binarize_seed=3))
    assert len(calls) == 4 and all(kw["binarize_seed"] == 3 and kw["num_samples"] == 4 for kw in calls)


def test_aggregate_samples_fit_a_mixture_and_leave_the_model_alone(sorted_digits, spied, monkeypatch):
    x, _ = sorted_digits
    model, _ = spied
    fitted = []
    real = latent.fit_aggregate_posterior
    monkeypatch.setattr(latent, "fit_aggregate_posterior", lambda *a, **kw: fitted.append(real(*a, **kw)) or fitted[-1])
    fig = make_figure("aggregate-samples", model, x, num_images=3, seed=0)
    images = np.array([ax.images[0].get_array() for ax in fig.axes])
    plt.close(fig)
    assert len(fitted) == 1 and not hasattr(model, "aggregate_posterior_")
    expected = latent.sample_aggregate_posterior(model, fitted[0], 9, seed=0)
    np.testing.assert_allclose(images, np.clip(expected[..., 0], 0, 1), atol=1e-6)
