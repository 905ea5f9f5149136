"""tfpvae.figures: which images each figure is drawn from, on a split stored in class order."""

import re

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


def test_scatter_refuses_labels_that_do_not_match_the_images(sorted_digits, spied):
    x, y = sorted_digits
    model, _ = spied
    for labels in (y[:100], np.r_[y, y]):  # too few (an IndexError before), too many (silently wrong colours)
        with pytest.raises(
            ValueError, match=rf"`y` must have shape \({len(x)},\), one per image; got \({len(labels)},\)"
        ):
            make_figure("scatter", model, x, labels, max_points=50)
    fig = make_figure("scatter", model, x, y, max_points=50, seed=1)
    emb = latent.embed_latents(model, x, max_points=50, seed=1)
    legend = [t.get_text() for t in fig.legends[0].get_texts()]
    plt.close(fig)
    assert legend == [str(c) for c in np.unique(y[emb.indices])]


@pytest.mark.parametrize(
    "kind, kwargs, need, why",
    [
        ("interpolation", {}, 2, "to pair"),
        ("aggregate-samples", {}, 10, "to fit its 10-component mixture to their codes"),
        ("manifold", {}, 3, "for the PCA plane of their codes"),
        ("scatter", {}, 2, "for a PCA projection"),
        ("scatter", {"method": "tsne"}, 5, "for a t-SNE map"),
    ],
)
def test_figures_refuse_too_few_images_up_front_naming_the_count(sorted_digits, spied, kind, kwargs, need, why):
    x, _ = sorted_digits
    model, _ = spied
    few = x[: need - 1]
    message = f"Figure '{kind}' needs >= {need} images {why}; got {need - 1} (CLI: more images in --input"
    with pytest.raises(ValueError, match=re.escape(message)):
        make_figure(kind, model, few, **kwargs)
    plt.close(make_figure(kind, model, x[:need], num_images=2, grid_size=3, **kwargs))  # enough: drawn


def test_make_figure_checks_the_seed_naming_it(sorted_digits, spied):
    x, _ = sorted_digits
    model, _ = spied
    for kind in ("interpolation", "scatter", "aggregate-samples", "samples"):
        for seed in (-1, 2**31):
            with pytest.raises(ValueError, match=r"`seed` must be an int in \[0, 2147483647\]; got "):
                make_figure(kind, model, x, seed=seed)
    with pytest.raises(TypeError, match=r"`seed` must be an int in \[0, 2147483647\]; got 'a'"):
        make_figure("interpolation", model, x, seed="a")


def _panels(fig):
    """The arrays of a `pixel_maps` figure, one list per row: image, mean, Bernoulli and latent variance."""
    arrays = [np.asarray(ax.images[0].get_array()) for ax in fig.axes if ax.images]
    plt.close(fig)
    return [arrays[i : i + 4] for i in range(0, len(arrays), 4)]


def test_uncertainty_figure_of_an_image_does_not_depend_on_num_images_or_index(sorted_digits, spied):
    x, _ = sorted_digits
    model, _ = spied
    x = x[::30]  # images of every class
    four = _panels(make_figure("uncertainty", model, x, num_images=4, num_samples=16, seed=3))
    eight = _panels(make_figure("uncertainty", model, x, num_images=8, num_samples=16, seed=3))
    from_two = _panels(make_figure("uncertainty", model, x, num_images=2, index=2, num_samples=16, seed=3))
    assert len(four) == len(eight) == 4 and len(from_two) == 2
    assert np.max(four[0][3]) > 1e-5  # the latent variance is drawn: equal maps are not trivially equal
    for a, b in zip(four + from_two, eight + eight[2:4]):
        for pa, pb in zip(a, b):
            np.testing.assert_allclose(pa, pb, rtol=0, atol=1e-6)


# ---------------------------------------------------------------------------- the command line
def _cli_error(argv, capsys):
    from tfpvae.cli import main

    capsys.readouterr()
    assert main([str(a) for a in argv]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("tfpvae: error: "), err
    return err[0]


def test_cli_names_input_for_a_missing_input_file(trained_digits_dir, tmp_path, capsys):
    missing, out = tmp_path / "nope.npy", tmp_path / "z.png"
    for command in (["plot", "scatter"], ["interpolate"]):
        err = _cli_error([*command, "--model", trained_digits_dir, "--input", missing, "--out", out], capsys)
        assert f"`--input` '{missing}' does not exist" in err and "`source`" not in err
    np.save(tmp_path / "empty.npy", np.zeros((0, 8, 8), np.float32))
    err = _cli_error(
        ["plot", "scatter", "--model", trained_digits_dir, "--input", tmp_path / "empty.npy", "--out", out], capsys
    )
    assert f"`--input` '{tmp_path / 'empty.npy'}' holds no images" in err  # a traceback before
    assert not out.exists()


def test_cli_figures_from_too_few_images_name_the_count_and_the_flags(trained_digits_dir, digits, tmp_path, capsys):
    _, (xt, _) = digits
    out = tmp_path / "z.png"
    np.save(tmp_path / "x1.npy", xt[:1])
    np.save(tmp_path / "x5.npy", xt[:5])
    model = ["--model", trained_digits_dir, "--out", out]
    err = _cli_error(["plot", "interpolation", *model, "--input", tmp_path / "x1.npy"], capsys)
    assert "Figure 'interpolation' needs >= 2 images to pair; got 1" in err and "--limit" in err
    assert "--start" not in err
    err = _cli_error(["plot", "aggregate-samples", *model, "--input", tmp_path / "x5.npy"], capsys)
    assert "Figure 'aggregate-samples' needs >= 10 images" in err and "got 5" in err
    assert "--num-components" not in err
    err = _cli_error(["plot", "aggregate-samples", *model, "--dataset", "digits", "--limit", "3"], capsys)
    assert "needs >= 10 images" in err and "got 3" in err and "--limit" in err
    assert not out.exists()
