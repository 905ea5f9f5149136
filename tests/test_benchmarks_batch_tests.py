"""benchmarks/batch_tests.py: the batches it draws, a smoke run end to end, and its figure."""

from __future__ import annotations

import json
import shlex

import numpy as np
import pytest
from scripts import benchmark


@pytest.fixture(scope="module")
def bench():
    return benchmark("batch_tests")


def test_mixed_batches_draw_distinct_images_from_the_mixture(bench):
    rng = np.random.default_rng(0)
    rows, shifted = bench.mixed_batches(rng, num_normal=50, num_shifted=30, size=20, share=0.2, num_batches=400)
    assert rows.shape == (400, 20) and shifted.shape == (400,)
    assert all(len(set(r)) == 20 for r in rows)  # distinct images within a batch
    np.testing.assert_array_equal((rows >= 50).sum(1), shifted)  # shifted rows index the second part
    assert rows.min() >= 0 and rows.max() < 80
    # Binomial(20, 0.2): mean 4, standard error of the mean over 400 batches about 0.09.
    assert abs(shifted.mean() - 4.0) < 0.4
    pure, k = bench.mixed_batches(rng, 50, 30, 10, 1.0, 5)
    assert np.all(k == 10) and np.all(pure >= 50)


@pytest.mark.slow
def test_quick_run_reports_every_cell_and_draws_the_figure(bench, data_dir, tmp_path, capsys):
    out, png = tmp_path / "batch.jsonl", tmp_path / "batch.png"
    argv = f"--quick --datasets mnist --runs {tmp_path / 'runs'} --data-dir {data_dir} --out {out} --plot {png}"
    assert bench.main(shlex.split(argv)) == 0
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    rows = [r for r in lines if "batch_size" in r]
    settings = lines[0]["settings"]
    sizes, shares = settings["sizes"], settings["shares"]
    normal = [r for r in rows if r["set"] == "normal"]
    assert [r["batch_size"] for r in normal] == sizes
    shifted = {(r["set"], r["share"], r["batch_size"]) for r in rows if r["set"] != "normal"}
    assert shifted == {(s, f, m) for s in ("fashion_mnist", "hflip") for f in shares for m in sizes}
    for r in rows:
        rates = r.get("fpr") or r["power"]
        assert set(rates) == set(bench.TESTS)
        for value in rates.values():  # a fraction of the batches
            assert 0.0 <= value <= 1.0 and value * r["num_batches"] == pytest.approx(round(value * r["num_batches"]))
    assert all(r["fpr_se"]["either"] <= 0.12 for r in normal)
    # A purely shifted batch of the other data set is easy at the larger size.
    assert (
        next(r for r in rows if (r["set"], r["share"], r["batch_size"]) == ("fashion_mnist", 1.0, 20))["power"][
            "either"
        ]
        >= 0.8
    )
    assert "model mnist: rejection rate at alpha = 0.05" in capsys.readouterr().out
    from PIL import Image

    with Image.open(png) as image:
        assert image.format == "PNG" and min(image.size) > 200
        assert np.asarray(image.convert("L"), np.float32).std() > 5
