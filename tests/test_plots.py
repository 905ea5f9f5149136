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
