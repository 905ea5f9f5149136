"""Per-pixel anomaly maps and the localisation metrics: hand-computed cases, references, a tiny model."""

from __future__ import annotations

import numpy as np
import pytest

from tfpvae.anomaly_maps import METHODS, anomaly_map, pixel_auroc, pro_curve, pro_score

NORMAL = 29  # normal pixels of the hand-computed case: 2 images of 4x4, 3 abnormal pixels


def _hand_case(r2_score: float = 0.6) -> tuple[np.ndarray, np.ndarray]:
    """Two 4x4 images. Image 0: region R1 = {(0, 0), (0, 1)} scored 0.9 and 0.4, a normal pixel
    scored 0.5. Image 1: region R2 = {(3, 3)} scored `r2_score`, a normal pixel scored 0.3.
    Every other pixel is normal and scores 0."""
    maps = np.zeros((2, 4, 4))
    masks = np.zeros((2, 4, 4), bool)
    maps[0, 0, 0], maps[0, 0, 1], maps[0, 2, 2] = 0.9, 0.4, 0.5
    masks[0, 0, :2] = True
    maps[1, 3, 3], maps[1, 0, 0] = r2_score, 0.3
    masks[1, 3, 3] = True
    return maps, masks


def test_pixel_auroc_of_the_hand_computed_case():
    # Normal pixels below each abnormal one: 0.9 -> 29, 0.6 -> 29, 0.4 -> 28 (0.5 is above it).
    assert pixel_auroc(*_hand_case()) == pytest.approx((29 + 29 + 28) / (3 * NORMAL), abs=1e-12)
    # With R2 scored 0, it ties with the 27 normal zeros: each tie counts one half.
    assert pixel_auroc(*_hand_case(0.0)) == pytest.approx((29 + 28 + 27 / 2) / (3 * NORMAL), abs=1e-12)


def test_pro_curve_of_the_hand_computed_case():
    fpr, pro = pro_curve(*_hand_case())
    # Thresholds 0.9, 0.6, 0.5, 0.4, 0.3, 0: R1 half found, R2 found, a false positive, R1 whole, ...
    np.testing.assert_allclose(fpr, [0, 0, 0, 1 / NORMAL, 1 / NORMAL, 2 / NORMAL, 1], atol=1e-12)
    np.testing.assert_allclose(pro, [0, 0.25, 0.75, 0.75, 1, 1, 1], atol=1e-12)


def test_pro_score_of_the_hand_computed_case():
    maps, masks = _hand_case()
    # PRO 0.75 until FPR 1/29, then 1: the area up to 0.3 is 0.75/29 + (0.3 - 1/29).
    assert pro_score(maps, masks, max_fpr=0.3) == pytest.approx((0.75 / NORMAL + 0.3 - 1 / NORMAL) / 0.3)
    # Cut inside the first step and after it.
    assert pro_score(maps, masks, max_fpr=0.5 / NORMAL) == pytest.approx(0.75)
    assert pro_score(maps, masks, max_fpr=1.5 / NORMAL) == pytest.approx((0.75 + 0.5) / 1.5)
    # R2 tied with 27 normal zeros: they are flagged together, so the curve goes straight from
    # (2/29, 0.5) to (1, 1) and is interpolated at 0.3 on that line.
    maps, masks = _hand_case(0.0)
    at_cut = 0.5 + 0.5 * (0.3 - 2 / NORMAL) / (1 - 2 / NORMAL)
    area = 0.25 / NORMAL + 0.5 / NORMAL + (0.3 - 2 / NORMAL) * (0.5 + at_cut) / 2
    assert pro_score(maps, masks, max_fpr=0.3) == pytest.approx(area / 0.3)
    assert pro_score(maps, masks, max_fpr=1.0) == pytest.approx(0.25 / NORMAL + 0.5 / NORMAL + (27 / NORMAL) * 0.75)


def test_pro_weighs_every_region_alike_and_joins_diagonal_pixels():
    maps = np.zeros((1, 6, 6))
    masks = np.zeros((1, 6, 6), bool)
    masks[0, :3, :3] = True  # a large region, found
    maps[0, :3, :3] = 1.0
    masks[0, 4, 4] = masks[0, 5, 5] = True  # a small region of two diagonal pixels (one region), missed
    # Half the regions are found before any false positive; the small one only with every pixel.
    fpr, pro = pro_curve(maps, masks)
    np.testing.assert_allclose(pro, [0, 0.5, 1])
    assert pixel_auroc(maps, masks) == pytest.approx((9 * 25 + 2 * 25 / 2) / (11 * 25))
    assert pro_score(maps, masks, max_fpr=0.3) == pytest.approx(0.5 + 0.5 * 0.3 / 2)


def _reference_pro(maps, masks, max_fpr):
    """PRO the slow way: each distinct threshold, scipy's labels, and numpy's trapezoid."""
    from scipy import ndimage

    regions = []
    for m, mask in zip(maps, masks, strict=True):
        labels, num = ndimage.label(mask, structure=np.ones((3, 3)))
        regions += [m[labels == r] for r in range(1, num + 1)]
    normal = maps[~masks]
    points = [(0.0, 0.0)]
    for t in np.unique(maps)[::-1]:
        points.append(((normal >= t).mean(), np.mean([(r >= t).mean() for r in regions])))
    fpr, pro = np.array(points).T
    cut = np.interp(max_fpr, fpr, pro)  # fpr increases strictly where the curve crosses max_fpr here
    keep = fpr < max_fpr
    return np.trapezoid(np.r_[pro[keep], cut], np.r_[fpr[keep], max_fpr]) / max_fpr


def test_metrics_agree_with_independent_computations(rng):
    from sklearn.metrics import roc_auc_score

    masks = np.zeros((5, 12, 12), bool)
    for i, (y, x) in enumerate(rng.integers(0, 9, (5, 2))):
        masks[i, y : y + 3, x : x + 2 + i % 2] = True
    masks[0, 11, 0] = True  # a one-pixel region
    maps = rng.normal(size=masks.shape) + 1.5 * masks
    maps = np.round(maps, 1)  # ties
    assert pixel_auroc(maps, masks) == pytest.approx(roc_auc_score(masks.ravel(), maps.ravel()), abs=1e-12)
    for max_fpr in (0.05, 0.3, 1.0):
        assert pro_score(maps, masks, max_fpr) == pytest.approx(_reference_pro(maps, masks, max_fpr), abs=1e-9)
    # Both depend on the order of the scores only; a channel axis of one is accepted.
    assert pro_score(np.exp(maps)[..., None], masks) == pytest.approx(pro_score(maps, masks))


@pytest.mark.parametrize(
    ("maps", "masks", "kwargs", "message"),
    [
        (np.zeros((2, 4, 4)), np.zeros((2, 4, 5)), {}, "`masks` must have the shape of `maps`"),
        (np.zeros((4, 4)), np.zeros((4, 4)), {}, "`maps` must have shape (n, H, W)"),
        (np.full((1, 2, 2), np.nan), np.eye(2)[None], {}, "`maps` must be finite"),
        (np.zeros((1, 2, 2)), np.full((1, 2, 2), 0.5), {}, "`masks` must hold only 0 and 1"),
        (np.zeros((1, 2, 2)), np.zeros((1, 2, 2)), {}, "`masks` must mark some pixels abnormal (1) and some normal"),
        (np.zeros((1, 2, 2)), np.eye(2)[None], {"max_fpr": 0.0}, "`max_fpr` must be a finite number in (0.0, 1.0]"),
    ],
)
def test_metrics_refuse_bad_arguments(maps, masks, kwargs, message):
    pattern = message.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[")
    with pytest.raises(ValueError, match=pattern):
        pro_score(maps, masks, **kwargs)
    if not kwargs:
        with pytest.raises(ValueError, match=pattern):
            pixel_auroc(maps, masks)


# ------------------------------------------------------------------------------- maps of a model
@pytest.fixture(scope="module")
def defective(digits):
    """Digits test images with a 2x3 patch inverted at a random place, and the patch masks."""
    _, (x, _) = digits
    rng = np.random.default_rng(0)
    x = x[:60].copy()
    masks = np.zeros(x.shape[:3], bool)
    for i, (y, c) in enumerate(rng.integers(1, 5, (len(x), 2))):
        masks[i, y : y + 2, c : c + 3] = True
    return x, np.where(masks[..., None], 1.0 - x, x).astype(np.float32), masks


def test_maps_have_one_value_per_pixel_and_are_reproducible(trained_digits, defective):
    _, x, _ = defective
    for method in METHODS:
        maps = anomaly_map(trained_digits, x[:5], method, num_samples=4, seed=1)
        assert maps.shape == (5, 8, 8) and maps.dtype == np.float64 and np.all(np.isfinite(maps))
        np.testing.assert_array_equal(maps, anomaly_map(trained_digits, x[:5], method, num_samples=4, seed=1))
    assert np.all(anomaly_map(trained_digits, x[:5], "pixel_kl", heal=0.0, smoothing=0.0, num_samples=4) >= 0)


def test_maps_are_the_quantities_they_name(trained_digits, defective):
    from tfpvae.uncertainty import predictive_uncertainty

    _, x, _ = defective
    x = x[:8]
    kw = dict(heal=0.0, smoothing=0.0, num_samples=16, seed=3)
    # The baseline: |x - predictive mean| of the same draws (predictive_uncertainty seeds them alike).
    mean = predictive_uncertainty(trained_digits, x, num_samples=16, seed=3).mean
    np.testing.assert_allclose(anomaly_map(trained_digits, x, "recon_error", **kw), np.abs(x - mean)[..., 0], atol=1e-6)
    # pixel_kl = pixel_nll - h(x), the binary entropy of the grey pixel itself.
    nll = anomaly_map(trained_digits, x, "pixel_nll", **kw)
    with np.errstate(divide="ignore", invalid="ignore"):
        h = np.nan_to_num(-(x * np.log(x) + (1 - x) * np.log1p(-x)))[..., 0]
    np.testing.assert_allclose(anomaly_map(trained_digits, x, "pixel_kl", **kw), np.maximum(nll - h, 0), atol=1e-6)
    # pixel_nll is minus the model's pixel_log_prob, up to the Monte Carlo error of other draws.
    reference = -trained_digits.pixel_log_prob(x, num_samples=256, seed=0)[..., 0]
    big = anomaly_map(trained_digits, x, "pixel_nll", heal=0.0, smoothing=0.0, num_samples=256, seed=0)
    assert np.abs(big - reference).mean() < 0.02 * reference.mean()
    # Smoothing is a Gaussian blur of the raw map.
    from scipy import ndimage

    blurred = ndimage.gaussian_filter(nll, (0, 1.0, 1.0), mode="nearest")
    np.testing.assert_allclose(anomaly_map(trained_digits, x, "pixel_nll", **{**kw, "smoothing": 1.0}), blurred)


def test_an_images_map_does_not_depend_on_the_rest_of_the_batch(trained_digits, defective, monkeypatch):
    import tfpvae.uncertainty

    _, x, _ = defective
    kw = dict(heal=0.0, smoothing=0.0, num_samples=16, seed=3)
    whole = anomaly_map(trained_digits, x[:8], "pixel_nll", **kw)
    # The same draws; only float32 rounding in matrix products of another batch size differs.
    np.testing.assert_allclose(anomaly_map(trained_digits, x[:3], "pixel_nll", **kw), whole[:3], rtol=1e-5, atol=1e-6)
    monkeypatch.setattr(tfpvae.uncertainty, "_DECODE_BUDGET", 16 * 3)  # chunks of 3 images
    np.testing.assert_allclose(anomaly_map(trained_digits, x[:8], "pixel_nll", **kw), whole, rtol=1e-5, atol=1e-6)


def test_healing_replaces_the_most_abnormal_pixels_by_the_reconstruction(trained_digits, defective):
    from tfpvae.anomaly_maps import _healed

    _, x, masks = defective
    x = x[:6]
    maps = masks[:6].astype(float)  # the defect looks abnormal, nothing else
    healed = _healed(trained_digits, x, maps, heal=0.1)
    recon = trained_digits.reconstruct(x)
    changed = healed != x
    # ceil(0.1 * 64) = 7 pixels an image, the 6 of the defect among them, now the reconstruction.
    assert np.all(changed.sum(axis=(1, 2, 3)) <= 7)
    np.testing.assert_allclose(healed[masks[:6]], recon[masks[:6]], atol=1e-6)
    np.testing.assert_array_equal(healed[~changed], x[~changed])


def test_a_defect_scores_higher_than_the_clean_image_there(trained_digits, defective):
    clean, x, masks = defective
    # A 2-d latent space on 8x8 digits explains clean images loosely (a mean reconstruction
    # error of about 0.2): the margins are those of a weak model (ratios 1.8 to 3, AUROC 0.9).
    for method in ("pixel_nll", "pixel_kl", "recon_error"):
        on_defect = anomaly_map(trained_digits, x, method, num_samples=8)
        on_clean = anomaly_map(trained_digits, clean, method, num_samples=8)
        assert on_defect[masks].mean() > 1.5 * on_clean[masks].mean(), method
        assert pixel_auroc(on_defect, masks) > 0.85, method
        assert pro_score(on_defect, masks) > 0.6, method


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"method": "pixel_likelihood"}, "`method` must be one of 'pixel_nll', 'pixel_kl'"),
        ({"heal": 1.0}, "`heal` must be a finite number in [0.0, 1.0)"),
        ({"smoothing": -1.0}, "`smoothing` must be a finite number >= 0.0"),
        ({"num_samples": 0}, "`num_samples` must be an int >= 1"),
        ({"x": np.zeros((2, 28, 28, 1))}, "`x` images must have shape (8, 8, 1)"),
    ],
)
def test_anomaly_map_refuses_bad_arguments(trained_digits, kwargs, message):
    args = {"x": np.zeros((2, 8, 8, 1)), **kwargs}
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[")):
        anomaly_map(trained_digits, **args)


# ------------------------------------------------------------------------------- the figure
def test_overlay_figure_has_three_rows_and_outlines_the_masks(defective):
    import matplotlib.pyplot as plt

    from tfpvae.plots import anomaly_overlay

    _, x, masks = defective
    maps = masks[:4] + 0.1
    fig = anomaly_overlay(x[:4], maps, masks=masks[:4], labels=list("abcd"), title="t")
    panels = [ax for ax in fig.axes if ax.get_images()]
    assert len(panels) == 12  # image, map and overlay for each of 4 images
    assert sum(len(ax.collections) for ax in fig.axes) >= 8  # an outline on the map and on the overlay
    plt.close(fig)
    with pytest.raises(ValueError, match=r"`maps` must have shape \(4, 8, 8\[, C\]\) like the images; got \(3, 8, 8\)"):
        anomaly_overlay(x[:4], maps[:3])


def test_cli_plot_anomaly_map_writes_a_png(trained_digits_dir, tmp_path):
    import matplotlib.image

    from tfpvae.cli import main

    out = tmp_path / "map.png"
    command = f"plot anomaly-map --model {trained_digits_dir} --dataset digits --limit 20 --num-images 4"
    assert main(f"{command} --num-samples 4 --map-method recon_error --index 2 --out {out}".split()) == 0
    image = matplotlib.image.imread(out)
    height, width = image.shape[:2]
    assert width > height and image[..., :3].std() > 0.05  # three rows of four panels, not blank
