import os
import subprocess
import sys

import matplotlib.pyplot
import numpy as np
import pytest
from PIL import Image

from tfpvae import plots


def _png_pixels(fig, path):
    plots.save_figure(fig, path)
    return np.asarray(Image.open(path).convert("L"), dtype=np.float32)


def test_image_grid_has_requested_cells_and_content(tmp_path):
    images = np.random.default_rng(0).random((10, 8, 8, 1))
    fig = plots.image_grid(images, ncols=5, title="t")
    assert sum(ax.has_data() or bool(ax.images) for ax in fig.axes) == 10
    px = _png_pixels(fig, tmp_path / "g.png")
    assert px.std() > 10


def test_uint8_images_are_drawn_as_their_float_pixel_values():
    """uint8 0..255 is scaled as the models scale it (it was clipped to 0 and 1: silhouettes)."""
    grey = np.random.default_rng(1).integers(0, 256, (4, 8, 8, 1), dtype=np.uint8)
    maps = np.random.default_rng(2).random((4, 8, 8))
    figures = [
        lambda x: plots.image_grid(x),
        lambda x: plots.reconstructions(x, x),
        lambda x: plots.image_rows(x.reshape(2, 2, 8, 8, 1)),
        lambda x: plots.pixel_maps(x, {"m": maps}),
        lambda x: plots.anomaly_overlay(x, maps),
    ]
    for draw in figures:
        drawn = [[np.asarray(im.get_array()) for ax in draw(x).axes for im in ax.images] for x in (grey, grey / 255.0)]
        assert len(drawn[0]) == len(drawn[1]) > 0
        for a, b in zip(*drawn):
            np.testing.assert_allclose(a, b, atol=1e-6)
    matplotlib.pyplot.close("all")


def test_grid_shape_arguments_are_checked_by_name():
    images = np.zeros((5, 8, 8, 1))
    assert plots.image_grid(images, ncols=np.int64(2)).axes[0].get_gridspec().ncols == 2
    for ncols, error in ((0, ValueError), (-2, ValueError), (2.5, TypeError)):
        with pytest.raises(error, match="`ncols` must be an int >= 1; got "):
            plots.image_grid(images, ncols=ncols)
    with pytest.raises(ValueError, match="`axis_labels` must have 2 entries, one per axis; got 1"):
        plots.manifold_grid(np.zeros((2, 2, 8, 8, 1)), [[0, 1], [1, 0]], axis_labels=("u",))
    with pytest.raises(ValueError, match="`axis_labels` must have 2 entries, one per axis; got 3"):
        plots.latent_scatter(np.zeros((4, 2)), axis_labels=("u", "v", "w"))
    matplotlib.pyplot.close("all")


def test_one_image_and_its_map_and_mask_make_an_overlay():
    image, values = np.random.default_rng(3).random((8, 8, 1)), np.random.default_rng(4).random((8, 8))
    fig = plots.anomaly_overlay(image, values, masks=values > 0.5)
    assert sum(bool(ax.images) for ax in fig.axes) == 3
    matplotlib.pyplot.close(fig)


def test_reconstructions_rows(tmp_path):
    a = np.zeros((4, 8, 8, 1))
    fig = plots.reconstructions(a, a + 0.5)
    assert len(fig.axes) == 8
    with pytest.raises(ValueError, match="equal shapes"):
        plots.reconstructions(a, a[:2])


def test_training_curves_plot_train_and_validation():
    fig = plots.training_curves({"loss": [3, 2, 1], "val_loss": [4, 3, 2], "kl": [1, 1, 1]})
    assert [len(ax.lines) for ax in fig.axes] == [2, 1]
    np.testing.assert_array_equal(fig.axes[0].lines[1].get_ydata(), [4, 3, 2])
    with pytest.raises(ValueError, match="history"):
        plots.training_curves({"acc": [1]})


def _tick_texts(ax, axis="x"):
    labels = ax.get_xticklabels() if axis == "x" else ax.get_yticklabels()
    return [t.get_text() for t in labels]


def test_existing_reconstructions_keep_their_layout_and_per_class_picks_the_first_of_each(tmp_path, rng):
    x = rng.random((12, 6, 6, 1)).astype(np.float32)
    labels = np.array([3, 1, 3, 0, 1, 0, 2, 2, 1, 3, 0, 2])
    fig = plots.reconstructions(x, 1 - x, labels=labels, title="per class")
    assert len(fig.axes) == 8  # four classes: 2 rows x 4 columns
    assert [ax.get_title() for ax in fig.axes[:4]] == ["0", "1", "2", "3"]
    first = [3, 1, 6, 0]  # first index of classes 0, 1, 2, 3
    for col, i in enumerate(first):
        np.testing.assert_allclose(fig.axes[col].images[0].get_array(), x[i, ..., 0])
        np.testing.assert_allclose(fig.axes[4 + col].images[0].get_array(), 1 - x[i, ..., 0])
    names = plots.reconstructions(x, x, labels=labels, class_names={0: "zero"})
    assert names.axes[0].get_title() == "zero"
    assert _png_pixels(fig, tmp_path / "r.png").std() > 10
    with pytest.raises(ValueError, match="`labels` must have shape"):
        plots.reconstructions(x, x, labels=labels[:3])


def test_image_rows_tiles_cells_and_labels_rows_and_columns(rng):
    images = rng.random((3, 4, 5, 6, 1)).astype(np.float32)
    fig = plots.image_rows(images, ["a", "b", "c"], ["1", "2", "3", "4"], title="t")
    ax = fig.axes[0]
    tiled = ax.images[0].get_array()
    assert tiled.shape == (3 * 5 + 2, 4 * 6 + 3)  # one blank pixel between cells
    np.testing.assert_allclose(tiled[6:11, 14:20], images[1, 2, ..., 0])  # cell (1, 2)
    assert _tick_texts(ax, "y") == ["a", "b", "c"] and _tick_texts(ax) == ["1", "2", "3", "4"]
    np.testing.assert_allclose(ax.get_xticks(), np.arange(4) * 7 + 2.5)
    with pytest.raises(ValueError, match="`row_labels` must have 3 entries"):
        plots.image_rows(images, ["a"])
    with pytest.raises(ValueError, match=r"\(rows, columns, H, W, C\)"):
        plots.image_rows(images[0])


def test_interpolation_strips_plot_log_prior_per_path(tmp_path, rng):
    images = rng.random((2, 5, 8, 8, 1))
    log_prior = -rng.random((2, 5)) * 3
    fig = plots.interpolation_strips(images, log_prior, title="linear")
    strips, curve = fig.axes
    assert _tick_texts(strips, "y") == ["path 1", "path 2"]
    for i, line in enumerate(curve.lines):
        np.testing.assert_allclose(line.get_ydata(), log_prior[i])
    assert curve.get_ylabel() == "log p(z)"
    assert _png_pixels(fig, tmp_path / "i.png").std() > 10
    assert len(plots.interpolation_strips(images).axes) == 1
    with pytest.raises(ValueError, match=r"`log_prior` must have shape \(2, 5\)"):
        plots.interpolation_strips(images, log_prior[:, :3])


def test_traversal_grid_labels_dimensions_and_offsets(rng):
    fig = plots.traversal_grid(rng.random((2, 5, 8, 8, 1)), dims=[3, 7], offsets=[-2, -1, 0, 1, 2])
    ax = fig.axes[0]
    assert _tick_texts(ax, "y") == ["$z_{3}$", "$z_{7}$"]
    assert _tick_texts(ax) == ["-2σ", "-1σ", "0", "+1σ", "+2σ"]
    with pytest.raises(ValueError, match="`offsets` must have shape"):
        plots.traversal_grid(rng.random((2, 5, 8, 8, 1)), offsets=[0, 1])
    # Three significant digits, positional for ordinary steps (".2g" gave "+2.2σ" and "+1.5e+02σ").
    steps = [-2.25, -1e-3, 0, 0.004, 1 / 3, 150]
    fig = plots.traversal_grid(rng.random((1, 6, 8, 8, 1)), offsets=steps, unit="")
    assert _tick_texts(fig.axes[0]) == ["-2.25", "-0.001", "0", "+0.004", "+0.333", "+150"]


def test_manifold_grid_puts_coordinate_ticks_at_cell_centres(tmp_path, rng):
    g, h = 5, 8
    images = rng.random((g, g, h, h, 1))
    coords = np.array([np.linspace(-2, 2, g), np.linspace(2, -2, g)])
    fig = plots.manifold_grid(images, coords, axis_labels=("$z_0$", "$z_1$"), title="grid")
    ax = fig.axes[0]
    np.testing.assert_allclose(ax.get_xticks(), np.arange(g) * h + (h - 1) / 2)
    assert _tick_texts(ax) == ["-2.00", "-1.00", "0.00", "1.00", "2.00"]
    assert _tick_texts(ax, "y") == ["2.00", "1.00", "0.00", "-1.00", "-2.00"]
    assert ax.get_xlabel() == "$z_0$" and ax.get_ylabel() == "$z_1$"
    tiled = ax.images[0].get_array()
    np.testing.assert_allclose(tiled[h : 2 * h, 3 * h : 4 * h], images[1, 3, ..., 0])  # no gaps: cells abut
    assert _png_pixels(fig, tmp_path / "m.png").std() > 10
    many = plots.manifold_grid(rng.random((20, 20, 4, 4, 1)), np.tile(np.linspace(-3, 3, 20), (2, 1)))
    texts = _tick_texts(many.axes[0])
    assert len(texts) == 20 and sum(t != "" for t in texts) == 10  # every 2nd label when crowded
    with pytest.raises(ValueError, match="`coords` must be"):
        plots.manifold_grid(images, coords[:, :3])


def test_latent_scatter_has_class_legend_or_colour_bar(tmp_path, rng):
    coords = rng.normal(size=(300, 2))
    labels = rng.integers(0, 4, 300)
    fig = plots.latent_scatter(coords, labels=labels, class_names={2: "two"}, title="codes")
    legend = fig.legends[0]
    assert [t.get_text() for t in legend.get_texts()] == ["0", "1", "two", "3"]
    assert legend.get_title().get_text() == "class"
    ax = fig.axes[0]
    assert sum(len(c.get_offsets()) for c in ax.collections) == 300
    np.testing.assert_allclose(ax.collections[1].get_offsets(), coords[labels == 1])
    assert _png_pixels(fig, tmp_path / "s.png").std() > 10

    values = coords[:, 0] ** 2
    fig = plots.latent_scatter(coords, values=values, values_label="score", limits=((-1, 1), (-2, 2)))
    main, bar = fig.axes
    np.testing.assert_allclose(main.collections[0].get_array(), values)
    assert bar.get_ylabel() == "score" and main.get_xlim() == (-1, 1) and main.get_ylim() == (-2, 2)
    assert _png_pixels(fig, tmp_path / "v.png").std() > 10
    with pytest.raises(ValueError, match="not both"):
        plots.latent_scatter(coords, labels=labels, values=values)
    with pytest.raises(ValueError, match=r"`coords` must have shape \(n, 2\)"):
        plots.latent_scatter(coords[:, :1])


def test_latent_scatter_of_many_named_classes_keeps_a_legend(tmp_path, rng):
    """More than 20 classes: numbers get a colour bar, names (no value to colour by) a legend."""
    coords = rng.normal(size=(250, 2))
    names = np.array([f"class {i % 25:02d}" for i in range(250)])  # 25 classes, named
    fig = plots.latent_scatter(coords, labels=names)
    assert [t.get_text() for t in fig.legends[0].get_texts()] == [f"class {k:02d}" for k in range(25)]
    colours = {tuple(c.get_facecolor()[0]) for c in fig.axes[0].collections}
    assert len(fig.axes[0].collections) == 25 and len(colours) == 25  # one distinct colour per class
    assert len(fig.axes) == 1 and _png_pixels(fig, tmp_path / "n.png").std() > 10  # no colour bar
    fig = plots.latent_scatter(coords, labels=np.arange(250) % 25)
    assert not fig.legends and fig.axes[1].get_ylabel() == "class"  # numbers: a colour bar
    np.testing.assert_array_equal(fig.axes[0].collections[0].get_array(), np.arange(250) % 25)


def test_string_labels_of_numbers_are_in_natural_order(rng):
    # Labels read from a CSV are strings: "2" comes before "10", as their numbers do.
    coords = rng.normal(size=(60, 2))
    labels = np.array([f"{i % 12}" for i in range(60)])
    fig = plots.latent_scatter(coords, labels=labels)
    assert [t.get_text() for t in fig.legends[0].get_texts()] == [str(k) for k in range(12)]
    np.testing.assert_allclose(fig.axes[0].collections[10].get_offsets(), coords[labels == "10"])
    mixed = np.array(["b10", "b2", "a", "b1", "a"])
    x = rng.random((5, 4, 4, 1))
    fig = plots.reconstructions(x, 1 - x, labels=mixed)
    assert [ax.get_title() for ax in fig.axes[:4]] == ["a", "b1", "b2", "b10"]
    for col, i in enumerate([2, 3, 1, 0]):  # each class's first image, in that order
        np.testing.assert_allclose(fig.axes[col].images[0].get_array(), x[i, ..., 0])


def test_image_grid_needs_one_title_per_image(rng):
    images = rng.random((4, 8, 8, 1))
    with pytest.raises(ValueError, match=r"`titles` must have 4 entries, one per image; got 1\."):
        plots.image_grid(images, titles=["a"])
    fig = plots.image_grid(images, titles=list("abcd"))
    assert [ax.get_title() for ax in fig.axes] == ["a", "b", "c", "d"]


def test_score_histograms_are_normalised_with_shared_bins(tmp_path, rng):
    normal, anomalous = rng.normal(0, 1, 500), rng.normal(3, 1, 200)
    fig = plots.score_histograms({"normal": normal, "anomalous": anomalous}, bins=30, threshold=1.5)
    ax = fig.axes[0]
    filled = [p for p in ax.patches if p.get_fill()]
    assert len(filled) == 60  # 30 bars per group, one set of edges
    for group in (filled[:30], filled[30:]):
        area = sum(p.get_height() * p.get_width() for p in group)
        assert area == pytest.approx(1.0, rel=1e-6)
    np.testing.assert_allclose([p.get_x() for p in filled[:30]], [p.get_x() for p in filled[30:]])
    texts = [t.get_text() for t in ax.get_legend().get_texts()]
    assert texts == ["normal (n=500)", "anomalous (n=200)", "threshold 1.5"]
    assert _png_pixels(fig, tmp_path / "h.png").std() > 5

    # A single huge score is counted at the edge, not allowed to squash the plot.
    outlier = plots.score_histograms({"a": np.r_[normal, 1e6]})
    assert outlier.axes[0].get_xlim()[1] < 100
    assert "1 beyond axis" in outlier.axes[0].get_legend().get_texts()[0].get_text()

    # Anomalies with a heavy tail (4% far out) do not squeeze the normal scores into one bin:
    # the range follows each group's 5-95 percentiles, and the tail is counted at the edge.
    tail = -100.0 * (1.0 + rng.pareto(1.0, 12))
    heavy = np.r_[rng.normal(-10, 3, 288), tail]
    fig = plots.score_histograms({"normal": normal[:300], "anomalous": heavy}, bins=24)
    bars = [p for p in fig.axes[0].patches if p.get_fill()]
    assert sum(p.get_height() > 0 for p in bars[:24]) >= 3  # the normal group's bins (1 before)
    assert f"{len(tail)} beyond axis" in fig.axes[0].get_legend().get_texts()[1].get_text()

    panels = plots.score_histograms({"nll": {"a": normal, "b": anomalous}, "kl": {"a": normal, "b": normal}})
    assert [ax.get_xlabel() for ax in panels.axes] == ["nll", "kl"]
    with pytest.raises(ValueError, match="NaN or Inf"):
        plots.score_histograms({"a": [1.0, np.nan]})


def test_roc_curves_report_sklearn_auroc(tmp_path, rng):
    from sklearn.metrics import roc_auc_score

    normal = {"nll": rng.normal(0, 1, 300), "kl": rng.normal(0, 1, 300)}
    anomalous = {"nll": rng.normal(1.5, 1, 200), "kl": rng.normal(0.2, 1, 200)}
    fig = plots.roc_curves(normal, anomalous, title="roc")
    ax = fig.axes[0]
    texts = [t.get_text() for t in ax.get_legend().get_texts()]
    for name, text in zip(("nll", "kl"), texts):
        truth = np.r_[np.zeros(300), np.ones(200)]
        auroc = roc_auc_score(truth, np.r_[normal[name], anomalous[name]])
        assert text == f"{name} (AUROC {auroc:.3f})"
    assert texts[-1].startswith("chance")
    xs, ys = ax.lines[0].get_data()
    assert xs[0] == 0 and ys[-1] == 1 and np.all(np.diff(xs) >= 0)
    assert _png_pixels(fig, tmp_path / "roc.png").std() > 5

    flipped = plots.roc_curves(normal["nll"], anomalous["nll"], higher_is_anomalous=False)
    text = flipped.axes[0].get_legend().get_texts()[0].get_text()
    auroc = roc_auc_score(np.r_[np.zeros(300), np.ones(200)], np.r_[normal["nll"], anomalous["nll"]])
    assert text == f"score (AUROC {1 - auroc:.3f})"
    with pytest.raises(ValueError, match="same score names"):
        plots.roc_curves(normal, {"nll": anomalous["nll"]})
    with pytest.raises(TypeError, match="both be arrays"):
        plots.roc_curves(normal, anomalous["nll"])


def test_pixel_maps_share_a_colour_scale_per_column(tmp_path, rng):
    images = rng.random((3, 8, 8, 1))
    maps = {"log p": -rng.random((3, 8, 8, 1)) * 4, "variance": rng.random((3, 8, 8)) * 0.25}
    fig = plots.pixel_maps(images, maps, cmaps={"log p": "magma"}, row_labels=["a", "b", "c"], title="maps")
    grid = np.array(fig.axes[:9]).reshape(3, 3)
    assert [ax.get_title() for ax in grid[0]] == ["image", "log p", "variance"]
    assert len(fig.axes) == 9 + 2  # one colour bar per map column
    for j, name in enumerate(maps, start=1):
        values = np.asarray(maps[name]).reshape(3, 8, 8)
        for i in range(3):
            im = grid[i, j].images[0]
            assert im.get_clim() == pytest.approx((values.min(), values.max()))
            np.testing.assert_allclose(im.get_array(), values[i])
    assert grid[0, 1].images[0].get_cmap().name == "magma"
    assert _png_pixels(fig, tmp_path / "p.png").std() > 10
    single = plots.pixel_maps(images[0], {"v": maps["variance"][0]})
    assert len(single.axes) == 3
    with pytest.raises(ValueError, match=r"`maps\['v'\]` must have shape"):
        plots.pixel_maps(images, {"v": np.zeros((2, 8, 8))})


def test_charts_are_importable_from_plots():
    from tfpvae import charts

    assert plots.training_curves is charts.training_curves
    assert plots.score_histograms is charts.score_histograms
    assert plots.roc_curves is charts.roc_curves


def test_importing_plots_leaves_the_backend_alone():
    """A library never picks the backend: one chosen before the import, without a display, stays."""
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "MPLBACKEND")}
    code = "import matplotlib; matplotlib.use('svg'); import tfpvae.plots; print(matplotlib.get_backend())"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "svg"
