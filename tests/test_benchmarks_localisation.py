"""benchmarks/localisation.py: its defects are what their masks say, and a quick run reports every method."""

from __future__ import annotations

import json
import shlex

import numpy as np
import pytest
from scripts import benchmark


@pytest.fixture(scope="module")
def localisation():
    return benchmark("localisation")


@pytest.mark.parametrize("kind", ["scratch", "blob", "occlusion", "pasted"])
def test_defects_change_the_pixels_their_masks_mark(localisation, kind):
    rng = np.random.default_rng(0)
    base = (rng.random((30, 28, 28, 1)) < 0.2).astype(np.float32)  # sparse "strokes"
    other = rng.random((10, 28, 28, 1)).astype(np.float32)
    images, masks = localisation.make_defects(kind, base, other, seed=0)
    assert images.shape == base.shape and masks.shape == base.shape[:3]
    assert images.min() >= 0.0 and images.max() <= 1.0
    change = np.abs(images - base)[..., 0]
    # Every masked pixel changed by at least MIN_CHANGE; each defect marks at least MIN_PIXELS.
    assert np.all(change[masks] >= localisation.MIN_CHANGE)
    assert np.all(masks.sum(axis=(1, 2)) >= localisation.MIN_PIXELS)
    # Outside the masks, only pixels inside the defect that changed less may differ.
    assert np.all(change[~masks] < localisation.MIN_CHANGE)
    again, again_masks = localisation.make_defects(kind, base, other, seed=0)
    np.testing.assert_array_equal(again, images)
    np.testing.assert_array_equal(again_masks, masks)


@pytest.mark.slow  # trains a one-epoch MNIST model, scores 4 x 40 images 8 ways: about 20 s
def test_quick_run_reports_every_defect_and_method_and_plots_them(localisation, data_dir, tmp_path):
    from tfpvae.anomaly_maps import METHODS

    out = tmp_path / "localisation.jsonl"
    argv = f"--quick --datasets mnist --runs {tmp_path / 'runs'} --data-dir {data_dir} --out {out}"
    assert localisation.main(shlex.split(argv)) == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    keys = {(r["defect"], r["method"], r["heal"], r["smoothing"]) for r in rows}
    expected = len(localisation.DEFECTS) * len(METHODS) * len(localisation.HEAL) * len(localisation.SMOOTHING)
    assert len(rows) == len(keys) == expected
    assert all(0.0 <= r["pro"] <= 1.0 and 0.0 <= r["pixel_auroc"] <= 1.0 for r in rows)
    # Even a one-epoch model finds pasted patches better than chance.
    pasted = [r for r in rows if r["defect"] == "pasted" and r["method"] == "pixel_kl"]
    assert min(r["pixel_auroc"] for r in pasted) > 0.6
    png = tmp_path / "bars.png"
    localisation.plot_results(out, png)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
