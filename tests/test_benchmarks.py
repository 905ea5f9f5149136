"""Test-size runs of the benchmark scripts: rows complete and finite.

benchmarks/run.py (the speed/quality harness):

Not a timing test: `--smoke` trains each model for about a second on 1,024 images and
scores 16 images with k=8, so the numbers are meaningless; it checks that the harness runs
end to end (both references, the memory subprocess, the summary) and reports every field.
"""

from __future__ import annotations

import json
import math
import shlex
from pathlib import Path

import numpy as np
import pytest
from scripts import benchmark

import tfpvae

ROOT = Path(__file__).resolve().parents[1]
# Each test here runs a benchmark script end to end (or sits beside those that do): the slow tier.
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def bench():
    return benchmark("run")


def _finite_numbers(value):
    if isinstance(value, dict):
        for v in value.values():
            yield from _finite_numbers(v)
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        yield value


def test_smoke_run_reports_every_field(bench, data_dir, tmp_path, capsys):
    out = tmp_path / "bench.jsonl"
    command = f"--smoke --lr-schedule linear --data-dir {shlex.quote(str(data_dir))} --out {out}"
    assert bench.main(shlex.split(command)) == 0
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    rows, summary = lines[:-1], lines[-1]
    assert [r["model"] for r in rows] == ["tfpvae", "tfp_example", "keras_example"]
    for row in rows:
        assert set(bench.ROW_FIELDS) <= set(row), row
        assert all(math.isfinite(v) for v in _finite_numbers(row)), row
        assert row["train_steps"] >= 1 and row["train_images_per_s"] > 0 and row["score_images_per_s"] > 0
        assert row["nll_key"] == "iwae_nll_k8" and row["score_k"] == 8 and row["score_images"] == 16
        assert 0 < row["iwae_nll"] < 784 * math.log(2) * 2  # nats per 28x28 image, far from degenerate
    memory = rows[0]["score_memory"]
    assert memory["images"] == 16 and memory["k"] == 50 and memory["peak_rss_mb"] >= memory["rss_before_scoring_mb"] > 0
    assert summary["summary"] and summary["mode"] == "smoke" and summary["lr_schedule"] == "linear"
    assert set(summary["ratios"]) == {"tfp_example", "keras_example"}
    for ratios in summary["ratios"].values():
        assert ratios["train_throughput"] > 0 and ratios["score_throughput"] > 0
    assert "score_memory_lt_3GB" in summary["goals_met"]
    printed = capsys.readouterr().out
    assert "| tfpvae |" in printed and "ratios tfpvae / reference" in printed


def test_budget_clock_measures_steady_state(bench):
    clock = bench.BudgetClock(seconds=10.0)
    clock.start = 0.0
    clock.ends = [5.0, 6.0, 7.0, 8.0, 9.0]  # the first step traced: 5 s
    assert clock.elapsed == 9.0
    assert clock.steady_images_per_s(warmup_steps=1, batch_size=128) == pytest.approx(3 * 128 / 3.0)


def test_overrides_are_typed(bench):
    assert bench._typed_overrides(["latent_dim=8", "learning_rate=0.002", "architecture=mlp"]) == {
        "latent_dim": 8,
        "learning_rate": 0.002,
        "architecture": "mlp",
    }
    with pytest.raises(SystemExit):
        bench._typed_overrides(["nonsense=1"])


def test_anomaly_benchmark_quick_run(data_dir, tmp_path):
    out = tmp_path / "anomaly.jsonl"
    argv = shlex.split(f"--quick --digits 3 --data-dir {shlex.quote(str(data_dir))} --out {out}")
    assert benchmark("anomaly").main(argv) == 0
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert [line["task"] for line in lines] == [
        "fashion_mnist -> mnist",
        "mnist -> fashion_mnist",
        "one-class mnist mean",
        "one-class fashion_mnist mean",
    ]
    for line in lines:
        assert set(line["auroc"]) == {
            "log_prob",
            "elbo",
            "rate",
            "distortion",
            "typicality",
            "complexity",
            "complexity_zlib",
            "combined",  # the detector's default, fitted on the reference half
        }
        assert all(0.0 <= v <= 1.0 for v in line["auroc"].values()), line
    assert set(lines[-2]["per_class"]) == set(lines[-1]["per_class"]) == {"3"}


@pytest.mark.slow  # two quick runs
def test_anomaly_benchmark_keeps_its_models(data_dir, tmp_path, capsys):
    """With --models the second run loads every model the first trained, and scores the same."""
    models = tmp_path / "models"
    common = f"--quick --digits 3 --one-class mnist --data-dir {shlex.quote(str(data_dir))} --models {models}"
    outs = [tmp_path / f"run{i}.jsonl" for i in (1, 2)]
    for out in outs:
        assert benchmark("anomaly").main(shlex.split(f"{common} --out {out}")) == 0
    origins = [json.loads(line)["model"] for line in capsys.readouterr().out.splitlines() if '"model"' in line]
    assert origins == ["trained"] * 3 + ["loaded"] * 3  # two shift models and one one-class, twice
    first, second = ([json.loads(line)["auroc"] for line in out.read_text().splitlines()] for out in outs)
    assert first == second
    # A model kept with other settings is refused, not silently reused.
    model = tfpvae.load(models / "one-class-mnist-3")
    tfpvae.save(model, tmp_path / "other", extra_metadata={"benchmark_settings": {"epochs": 99}})
    (models / "one-class-mnist-3").rename(tmp_path / "kept")
    (tmp_path / "other").rename(models / "one-class-mnist-3")
    with pytest.raises(SystemExit, match="other settings"):
        benchmark("anomaly").main(shlex.split(f"{common} --no-shift"))


def test_compressor_study_prints_every_template(data_dir, capsys):
    compressor = benchmark("compressor")
    assert compressor.main(shlex.split(f"--images 5 --pseudo-counts 0.5 --data-dir {shlex.quote(str(data_dir))}")) == 0
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| ") and "bits" not in line]
    assert len(rows) == 1 + len(compressor.TEMPLATES)  # zlib, then one row per template
    for row in rows:
        mnist, fashion = (float(cell) for cell in row.strip("| ").split(" | ")[1:])
        assert 0 < mnist < 28 * 28 * 1.5 and 0 < fashion < 28 * 28 * 1.5


def test_best_likelihood_recipe_smoke_run(data_dir, tmp_path):
    out = tmp_path / "best"
    recipe = f"--dataset binarized_mnist --data-dir {shlex.quote(str(data_dir))} --out {out} --train-images 512"
    recipe += " --test-images 16 --num-samples 8 --latent-dim 4 --prior mixture --train-samples 3"
    recipe += " --kl-warmup-epochs 1 --lr-schedule cosine --early-stopping 1 --dropout 0.1"
    assert benchmark("best_likelihood").main(shlex.split(f"{recipe} --epochs 3")) == 0
    summary = json.loads((out / "best_likelihood.json").read_text())
    assert summary["num_images"] == 16 and summary["num_samples"] == 8
    assert 1 <= summary["epochs_completed"] <= 3
    assert 0 < summary["iwae_nll"] < 784 * math.log(2) and summary["iwae_nll_stderr"] > 0
    assert summary["recipe"]["train_samples"] == 3 and summary["recipe"]["lr_schedule"] == "cosine"
    reloaded = tfpvae.load(out)
    assert reloaded.config.train_samples == 3 and reloaded.config.prior == "mixture" and reloaded.config.dropout == 0.1
    # The reported NLL, recomputed: IWAE with k=8 and seed 0 over the first 16 test images, by the saved model.
    x_test = tfpvae.datasets.load_split("binarized_mnist", "test", data_dir)[0][:16]
    log_p = reloaded.log_prob(x_test, 8, seed=0)
    assert summary["iwae_nll"] == pytest.approx(-log_p.mean(), rel=1e-5)
    assert summary["iwae_nll_stderr"] == pytest.approx(log_p.std(ddof=1) / 4, rel=1e-4)
    assert summary["final_train_loss"] == reloaded.training_history["loss"][-1]
    # --resume continues the checkpoint to the new total (--epochs counts all epochs).
    assert benchmark("best_likelihood").main(shlex.split(f"{recipe} --epochs 4 --resume")) == 0
    resumed = json.loads((out / "best_likelihood.json").read_text())
    assert resumed["epochs_completed"] == 4 and resumed["recipe"]["resume"] is True
    assert len(tfpvae.load(out).training_history["loss"]) == 4


def test_step_time_reports_every_candidate(data_dir, capsys):
    step_time = benchmark("step_time")
    flags = f"--data-dir {shlex.quote(str(data_dir))} --base latent_dim=2,hidden_units=8,train_samples=2,seed=0"
    flags += " --candidate plain: --candidate vamp:prior=vamp,num_components=3 --steps 2 --rounds 2"
    assert step_time.main(shlex.split(flags)) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    assert [r["candidate"] for r in rows] == ["plain", "vamp"]
    assert rows[0]["ratio"] == 1.0 and rows[0]["cpu_ratio"] == 1.0
    assert rows[1]["fields"] == {"prior": "vamp", "num_components": 3}
    assert all(r["ms_per_step"] > 0 and len(r["rounds_ms"]) == len(r["rounds_cpu_ms"]) == 2 for r in rows)
    for r in rows:  # each ratio is the medians' ratio to the first candidate's
        assert r["cpu_ratio"] == pytest.approx(r["cpu_ms_per_step"] / rows[0]["cpu_ms_per_step"], rel=0.01)
    assert step_time.parse_fields("a=1,b=mlp,c=1e-3", "--base") == {"a": 1, "b": "mlp", "c": 1e-3}
    with pytest.raises(SystemExit):
        step_time.main("--candidate x:latent_dim".split())  # no '=': a usage error naming --candidate


def test_roofline_counts_the_products_and_reports_fractions(tmp_path):
    roofline = benchmark("roofline")
    model = tfpvae.VAE(input_shape=(28, 28, 1))
    # The default MLP: 784-512-256-152 encoder, 16-256-512-784 decoder, 2 FLOPs per multiply-add.
    assert roofline.layer_flops(model.encoder) == 2 * (784 * 512 + 512 * 256 + 256 * 152)
    assert roofline.layer_flops(model.decoder) == 2 * (16 * 256 + 256 * 512 + 512 * 784)
    conv = tfpvae.VAE(input_shape=(8, 8, 1), architecture="conv", filters=2, hidden_units=4, latent_dim=2)
    # conv encoder: 3x3x1x2 at 4x4 outputs, 3x3x2x4 at 2x2, dense 16->4, head 4->5.
    assert roofline.layer_flops(conv.encoder) == 2 * (9 * 2 * 16 + 9 * 2 * 4 * 4 + 16 * 4 + 4 * 5)
    out = tmp_path / "roofline.json"
    flags = f"--images 16 --train-images 256 --num-samples 4 --rounds 1 --out {out}"
    assert roofline.main(shlex.split(flags)) == 0
    result = json.loads(out.read_text())
    assert {(r["what"], r["precision"]) for r in result["rows"]} == {
        *((what, p) for what in ("score", "train") for p in ("float32", "bfloat16")),
        ("score", "float32, TFP methods"),
    }
    enc, dec = result["encoder_mflops_per_image"], result["decoder_mflops_per_code"]
    work = {"score": enc + 4 * dec, "train": 3 * (enc + dec)}  # MFLOP per image, k = 4
    for row in result["rows"]:  # one round: that round's ceiling
        ceiling = result["best_ceiling_gflops"]["bfloat16" if row["precision"] == "bfloat16" else "float32"]
        assert row["ceiling_gflops"] == pytest.approx(ceiling, abs=0.1)
        expected = row["images_per_s"] * work[row["what"]] / 1e3 / ceiling
        assert row["fraction_of_ceiling"] == pytest.approx(expected, rel=1e-2, abs=1e-3)
    assert all(math.isfinite(v) and v >= 0 for v in _finite_numbers(result))
    # Scoring alone in float32: no training rows, no bfloat16 ceilings.
    flags = f"--images 16 --num-samples 4 --rounds 2 --precisions float32 --what score --out {out}"
    assert roofline.main(shlex.split(flags)) == 0
    result = json.loads(out.read_text())
    for row in result["rows"]:  # two rounds: the median of the rounds' own fractions
        per_work = work[row["what"]] / 1e3
        fractions = [rate * per_work / ceiling for rate, ceiling in row["per_round"]]
        assert len(fractions) == 2
        assert row["fraction_of_ceiling"] == pytest.approx(sum(fractions) / 2, rel=1e-2, abs=1e-3)
    assert {(r["what"], r["precision"]) for r in result["rows"]} == {
        ("score", "float32"),
        ("score", "float32, TFP methods"),
    }
    assert set(result["ceilings_gflops"]) == {"float32"} and result["rounds"] == 2


def test_precision_tradeoff_reports_speed_error_and_auroc(data_dir, tmp_path):
    precision = benchmark("precision")
    out = tmp_path / "precision.json"
    flags = f"--datasets mnist --epochs 1 --images 40 --num-samples 4 --rounds 1 --data-dir {data_dir} --out {out}"
    assert precision.main(shlex.split(flags)) == 0
    (row,) = json.loads(out.read_text())["rows"]
    assert len(row["aurocs"]) == 4 * len(precision.SCORES)
    assert row["nll_difference"] == pytest.approx(row["nll_bfloat16"] - row["nll_float32"], abs=2e-3)
    assert 0 <= row["abs_delta_median"] <= row["abs_delta_p99"] <= row["abs_delta_max"] < 1.0
    assert all(math.isfinite(v) for v in _finite_numbers(row))


def test_serving_benchmark_checks_every_answer(data_dir, tmp_path):
    from tfpvae.export import SERVED_SCORES

    out = tmp_path / "serving.json"
    flags = "--epochs 1 --train-limit 512 --num-samples 4 --requests 12 --max-images 8 --threads 2 --small 4"
    flags += f" --huge 40 --data-dir {shlex.quote(str(data_dir))} --out {out}"
    assert benchmark("serving").main(shlex.split(flags)) == 0
    result = json.loads(out.read_text())
    load = result["load"]
    assert load["requests"] == 12 and 12 <= load["images"] <= 96 and load["threads"] == 2
    assert result["answers_checked"] == load["images"] + 4 + 40 and result["all_answers_match"]
    assert set(result["largest_difference"]) == set(SERVED_SCORES)
    assert all(0 <= v <= result["atol"] for v in result["largest_difference"].values())
    assert [r["images"] for r in result["single_requests"]] == [4, 40]
    assert 0 < load["latency_ms"]["p50"] <= load["latency_ms"]["p99"] <= load["latency_ms"]["max"]
    assert load["requests_per_s"] > 0 and load["memory"]["peak_rss_mb"] >= load["memory"]["rss_before_mb"] > 0
    assert result["chunk_images"] * result["num_samples"] <= result["max_batch_elements"]
    assert all(math.isfinite(v) for v in _finite_numbers(result))


def test_ood_suite_sets_are_the_transforms_they_name():
    ood = benchmark("ood_suite")
    rng = np.random.default_rng(0)
    base = rng.uniform(size=(12, 28, 28, 1)).astype(np.float32)
    other = rng.uniform(size=(20, 28, 28, 1)).astype(np.float32)
    sets = ood.build_suite(base, other, "other", n=10, seed=0)
    assert list(sets)[0] == "other" and len(sets) >= 25
    for name, images in sets.items():
        assert images.shape == (10, 28, 28) or images.shape == (10, 28, 28, 1), name
        assert images.dtype == np.float32 and images.min() >= 0 and images.max() <= 1, name
    x = base[:10, ..., 0]
    np.testing.assert_array_equal(np.squeeze(sets["hflip"]), x[:, :, ::-1])
    np.testing.assert_array_equal(np.squeeze(sets["vflip"]), x[:, ::-1, :])
    np.testing.assert_allclose(np.squeeze(sets["invert"]), 1 - x)
    again = ood.build_suite(base, other, "other", n=10, seed=0)
    assert all(np.array_equal(again[k], sets[k]) for k in sets)  # seeded: the same suite every run


def test_as_close_is_the_share_of_shifted_images_no_further_from_the_training_data():
    ood = benchmark("ood_suite")
    train = np.zeros((3, 28, 28, 1), np.float32)
    train[1, :14] = 1.0  # top half white
    originals = np.zeros((4, 28, 28, 1), np.float32)
    originals[:, :10] = 1.0  # 4 rows short of the top-half image: sqrt(4 * 28) from it, sqrt(10 * 28) from black
    shifted = originals.copy()
    shifted[0, :14] = 1.0  # now one of the training images: closer than its original
    shifted[1] = originals[1]  # unchanged: as close
    shifted[2, 20:] = 1.0  # white added below: further
    shifted[3] = 1.0 - originals[3]  # inverted: further
    near = ood.as_close("vflip", "other", ood.pixel_1nn(train, shifted), ood.pixel_1nn(train, originals))
    assert near == {"as_close_as_original": 0.5}
    # Sets not made from normal images have no originals: no share.
    assert ood.as_close("other", "other", np.zeros(4), np.zeros(4)) == {}
    assert ood.as_close("photos", "other", np.zeros(4), np.zeros(4)) == {}


def test_grey_entropy_is_the_binary_entropy_of_the_pixels():
    ood = benchmark("ood_suite")
    x = np.zeros((2, 28, 28, 1), np.float32)
    x[1] = 0.5
    np.testing.assert_allclose(ood.grey_entropy(x), [0.0, 28 * 28 * math.log(2)], atol=1e-6)


def test_ood_suite_quick_run(data_dir, tmp_path):
    out = tmp_path / "ood.jsonl"
    argv = f"--quick --datasets mnist --no-timing --runs {tmp_path / 'runs'} --data-dir {data_dir} --out {out}"
    assert benchmark("ood_suite").main(shlex.split(argv)) == 0
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    sets = [line for line in lines if "set" in line]
    assert len(sets) >= 25 and sets[0]["set"] == "fashion_mnist"
    for line in sets:
        assert {"log_prob", "complexity", "dose_kde_kl"} <= set(line["auroc"])
        assert all(0.0 <= v <= 1.0 for v in line["auroc"].values()), line
        derived = line["set"] not in ("fashion_mnist", *benchmark("ood_suite").NOT_DERIVED)
        assert ("as_close_as_original" in line) == derived, line
    share = {line["set"]: line.get("as_close_as_original") for line in sets}
    assert share["invert"] == 0.0 and 0.0 <= share["hflip"] <= 1.0  # no inverted digit is near a training one


def test_chunk_size_sweeps_sizes_and_measures_memory_in_a_subprocess(tmp_path):
    chunk_size = benchmark("chunk_size")
    out = tmp_path / "chunk.json"
    flags = f"--sizes 64 256 --images 16 --num-samples 4 --rounds 2 --memory --out {out}"
    # A parent far larger than the children: a child that read its parent's peak (as
    # ru_maxrss does on Linux) would see no growth at all.
    ballast = np.ones(250_000_000)  # 2 GB, touched
    assert chunk_size.main(shlex.split(flags)) == 0
    del ballast
    result = json.loads(out.read_text())
    default = tfpvae.likelihood.default_batch_elements(tfpvae.VAE())
    assert result["default"] == default
    rows = {row["max_batch_elements"]: row for row in result["rows"]}
    assert set(rows) == {64, 256, default}  # the default is always measured: the ratios' reference
    assert rows[default]["ratio_to_default"] == 1.0
    assert result["largest_score_difference_nats"] < 1e-3
    # Each size's own subprocess: a peak that is its own (scoring grows it), not the parent's.
    assert all(row["peak_growth_mb"] > 0 for row in rows.values())
    assert chunk_size.peak_rss_mb() > 2000
    assert all(math.isfinite(v) and v >= 0 for v in _finite_numbers(result))
