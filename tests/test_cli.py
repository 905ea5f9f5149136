import csv
import json
import subprocess
import sys

import numpy as np
import pytest

from tfpvae.cli import main
from tfpvae.datasets import load_split
from tfpvae.subsets import evenly_spaced


def test_train_sample_info_round_trip_on_digits(tmp_path, capsys):
    run = tmp_path / "run"
    assert (
        main(
            [
                "train",
                "--dataset",
                "digits",
                "--epochs",
                "2",
                "--limit",
                "300",
                "--latent-dim",
                "2",
                "--seed",
                "0",
                "--no-progress",
                "--out",
                str(run),
            ]
        )
        == 0
    )
    for name in (
        "config.json",
        "weights.npz",
        "metadata.json",
        "history.csv",
        "samples.png",
        "reconstructions.png",
        "training_curves.png",
    ):
        assert (run / name).is_file(), name
    assert (run / "samples.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    lines = (run / "history.csv").read_text().splitlines()
    assert lines[0].startswith("epoch,loss,nll,kl,elbo") and len(lines) == 3

    assert main(["sample", "--model", str(run), "-n", "6", "--seed", "1", "--out", str(tmp_path / "s.npy")]) == 0
    samples = np.load(tmp_path / "s.npy")
    assert samples.shape == (6, 8, 8, 1) and 0 <= samples.min() and samples.max() <= 1
    capsys.readouterr()
    assert main(["info", "--model", str(run)]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["config"]["latent_dim"] == 2 and info["epochs_trained"] == 2 and info["num_parameters"] > 1000


@pytest.mark.parametrize(
    "argv,match",
    [
        (["sample", "--model", "/nonexistent/run", "--out", "x.png"], "does not exist"),
        (["train", "--dataset", "binarized_mnist", "--data-dir", "/nonexistent", "--out", "r"], "not found"),
    ],
)
def test_user_errors_print_one_line_and_exit_2(argv, match, capsys, monkeypatch, tmp_path):
    monkeypatch.setenv("TFPVAE_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("HOME", str(tmp_path))
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("tfpvae: error:") and match in err[0]


@pytest.mark.parametrize(
    "argv, match",
    [
        (["train", "--dataset", "cifar", "--out", "r"], "argument --dataset: invalid choice: 'cifar'"),
        (["train", "--epochs", "-1"], "argument --epochs: expected an integer >= 1, got '-1'"),
        (["detect", "--model", "m", "--target-fpr", "2"], "argument --target-fpr: expected a number in (0.0, 1.0)"),
        (["sample"], "the following arguments are required: --model, --out"),
        (["train", "--dataset", "digits", "--latent", "4"], "unrecognized arguments: --latent 4"),  # no abbreviations
        (["sample", "--model", "m", "--out", "s.jpg"], "argument --out: expected a file name ending in .png or .npy"),
        (["plot", "samples", "--model", "m", "--out", "p.gif"], "ending in .png or .pdf or .svg, got 'p.gif'"),
        (["interpolate", "--model", "m", "--dataset", "digits", "--out", "i.npy"], "ending in .png or .npz"),
        (
            ["detect", "--model", "m", "--seed", "-1"],
            "argument --seed: expected an integer in [0, 2147483647], got '-1'",
        ),
        (
            ["score", "--model", "m", "--binarize-seed", "2147483648"],
            "argument --binarize-seed: expected an integer in",
        ),
        (["detect", "--model", "m", "--limit", "3"], "argument --limit: expected an integer >= 4, got '3'"),
    ],
)
def test_argparse_errors_are_one_line_and_exit_2(argv, match, capsys):
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and match in err[0] and err[0].endswith("--help`)"), err


def test_console_entry_point_and_module_help():
    out = subprocess.run([sys.executable, "-m", "tfpvae", "--help"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and "train" in out.stdout and "sample" in out.stdout


def test_parsing_arguments_does_not_import_tensorflow():
    # --help and argument errors answer at once: TensorFlow comes in only for the work.
    code = "import sys; from tfpvae.cli import build_parser; build_parser(); print('tensorflow' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and out.stdout.strip() == "False", out.stderr[-2000:]


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory):
    run = tmp_path_factory.mktemp("cli") / "run"
    assert (
        main(
            [
                "train",
                "--dataset",
                "digits",
                "--epochs",
                "3",
                "--latent-dim",
                "2",
                "--batch-size",
                "32",
                "--seed",
                "0",
                "--no-progress",
                "--out",
                str(run),
            ]
        )
        == 0
    )
    return run


def test_evaluate_prints_consistent_json(digits_run, capsys):
    capsys.readouterr()
    assert (
        main(
            [
                "evaluate",
                "--model",
                str(digits_run),
                "--dataset",
                "digits",
                "--num-samples",
                "16",
                "--limit",
                "50",
                "--quiet",
            ]
        )
        == 0
    )
    r = json.loads(capsys.readouterr().out)
    assert r["num_images"] == 50 and r["num_samples"] == 16
    assert r["iwae_nll"] <= -r["elbo"] + 3 * r["elbo_stderr"]  # the IWAE bound is tighter
    assert r["bits_per_dim"] == pytest.approx(r["iwae_nll"] / (64 * np.log(2)))
    assert r["iwae_nll_stderr"] > 0 and r["iwae_nll_mc_stderr"] > 0


def test_score_writes_one_row_per_image(digits_run, tmp_path):
    out = tmp_path / "scores.csv"
    assert (
        main(
            [
                "score",
                "--model",
                str(digits_run),
                "--dataset",
                "digits",
                "--limit",
                "20",
                "--num-samples",
                "8",
                "--out",
                str(out),
                "--quiet",
            ]
        )
        == 0
    )
    import csv

    rows = list(csv.DictReader(open(out)))
    assert len(rows) == 20 and set(rows[0]) == {
        "id",
        "label",
        "log_prob",
        "log_prob_stderr",
        "elbo",
        "rate",
        "distortion",
        "complexity",
    }
    assert [int(r["id"]) for r in rows] == list(range(20))
    assert all(float(r["log_prob"]) < 0 and float(r["rate"]) <= 1e-9 for r in rows)
    np.save(tmp_path / "imgs.npy", np.zeros((3, 8, 8), np.float32))
    assert (
        main(
            [
                "score",
                "--model",
                str(digits_run),
                "--input",
                str(tmp_path / "imgs.npy"),
                "--num-samples",
                "4",
                "--out",
                str(out),
                "--score",
                "log_prob",
                "--quiet",
            ]
        )
        == 0
    )
    assert len(list(csv.DictReader(open(out)))) == 3


def test_score_typicality_needs_reference(digits_run, tmp_path, capsys):
    assert (
        main(
            [
                "score",
                "--model",
                str(digits_run),
                "--dataset",
                "digits",
                "--out",
                str(tmp_path / "s.csv"),
                "--score",
                "typicality",
            ]
        )
        == 2
    )
    assert "--typical-nll" in capsys.readouterr().err


def test_images_of_another_shape_or_output_folder_are_refused_before_any_work(digits_run, data_dir, tmp_path, capsys):
    model = ["--model", str(digits_run)]
    mnist = ["--dataset", "mnist", "--data-dir", str(data_dir), "--limit", "10"]
    np.save(tmp_path / "grey.npy", np.zeros((3, 8, 8, 1), np.float32))
    cases = [
        (
            ["score", *model, *mnist, "--out", str(tmp_path / "s.csv")],
            f"`--dataset mnist` images are 28x28x1 but the model in {digits_run} takes 8x8x1 images",
        ),
        (["evaluate", *model, *mnist], "`--dataset mnist` images are 28x28x1"),
        (
            ["detect", *model, "--normal", "digits", "--anomalous", "mnist", "--data-dir", str(data_dir)],
            "`--anomalous mnist` images are 28x28x1",
        ),
        (
            ["plot", "roc", *model, "--dataset", "digits", "--anomalous", "mnist", "--out", str(tmp_path / "r.png")],
            "`--anomalous mnist` images are 28x28x1",
        ),
        (
            [
                "score",
                *model,
                "--dataset",
                "digits",
                "--input",
                str(tmp_path / "grey.npy"),
                "--out",
                str(tmp_path / "s.csv"),
            ],
            "Give `--dataset` or `--input`, not both",
        ),
        (
            ["score", *model, "--dataset", "digits", "--out", str(tmp_path / "missing" / "s.csv")],
            f"folder {tmp_path / 'missing'} does not exist",
        ),
        (
            ["score", *model, "--dataset", "digits", "--out", str(tmp_path / "grey.npy" / "s.csv")],
            f"folder {tmp_path / 'grey.npy'} is a file, not a folder",
        ),
        (
            ["plot", "samples", *model, "--binarize-seed", "0", "--out", str(tmp_path / "r.png")],
            "`--binarize-seed` applies to the histogram and roc figures, not to 'samples'",
        ),
    ]
    for argv, match in cases:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and match in err[0], err
    assert not (tmp_path / "s.csv").exists() and not (tmp_path / "r.png").exists()


def test_detect_reports_every_score(digits_run, capsys, data_dir):
    capsys.readouterr()
    assert (
        main(
            [
                "detect",
                "--model",
                str(digits_run),
                "--normal",
                "digits",
                "--anomalous",
                "digits",
                "--limit",
                "40",
                "--num-samples",
                "8",
                "--quiet",
            ]
        )
        == 0
    )
    result = json.loads(capsys.readouterr().out)
    report = result.pop("scores")
    from tfpvae.anomaly import SCORES, compute_scores
    from tfpvae.likelihood import LikelihoodEstimator
    from tfpvae.model import load

    assert set(report) == set(SCORES)
    # Normal against the same distribution: no score can separate them much.
    assert all(0.2 < r["auroc"] < 0.8 for r in report.values())
    assert result == {
        "normal": "digits",
        "anomalous": "digits",
        "num_calibration": 40,
        "num_typicality_reference": 20,
        "num_normal_evaluated": 40,
        "num_anomalous": 40,
        "num_samples": 8,
        "seed": 0,
        "binarize_seed": None,
        "target_fpr": 0.05,
    }
    # Typicality's threshold, computed independently: AnomalyDetector's seeded split of the 40
    # calibration images, 20 setting the threshold and 20 giving the typical NLL (never the same).
    digits = load_split("digits", "test")[0]
    normal = digits[evenly_spaced(len(digits), 80)]  # --limit 40: 80 normal images spread over the split
    calibration = normal[np.random.default_rng(0).permutation(80)[:40]]
    estimator = LikelihoodEstimator.from_model(load(digits_run))
    nll = -compute_scores(estimator, calibration, "log_prob", num_samples=8, seed=0, progress=False)["log_prob"]
    split = np.random.default_rng(0).permutation(40)
    expected = np.quantile(-np.abs(nll[split[:20]] - nll[split[20:]].mean()), 0.05)
    np.testing.assert_allclose(report["typicality"]["threshold"], expected, rtol=1e-6)


def test_a_plain_autoencoder_is_scored_by_its_distortion_only(tmp_path, capsys):
    import csv

    import tfpvae

    ae = tfpvae.VAE(input_shape=(8, 8, 1), latent_dim=2, model_type="ae", seed=0)
    ae.compile()
    ae.save(tmp_path / "ae")
    data = ["--dataset", "digits", "--limit", "20", "--num-samples", "4", "--quiet"]
    # score, without --score: the scores this model can give (with one, a clear refusal).
    assert main(["score", "--model", str(tmp_path / "ae"), *data, "--out", str(tmp_path / "s.csv")]) == 0
    with open(tmp_path / "s.csv") as f:
        assert next(csv.reader(f)) == ["id", "label", "distortion"]
    capsys.readouterr()
    argv = ["score", "--model", str(tmp_path / "ae"), *data, "--score", "elbo", "--out", str(tmp_path / "e.csv")]
    assert main(argv) == 2
    assert "`elbo` needs a VAE; this model is a plain autoencoder" in capsys.readouterr().err
    # detect and the ROC figure: distortion alone.
    argv = ["detect", "--model", str(tmp_path / "ae"), "--normal", "digits", "--anomalous", "digits", "--limit", "20"]
    assert main([*argv, "--num-samples", "4", "--quiet"]) == 0
    assert set(json.loads(capsys.readouterr().out)["scores"]) == {"distortion"}
    argv = ["plot", "roc", "--model", str(tmp_path / "ae"), *data[:4], "--anomalous", "digits"]
    assert main([*argv, "--out", str(tmp_path / "roc.png")]) == 0 and (tmp_path / "roc.png").is_file()


@pytest.mark.parametrize(
    "kind",
    [
        "samples",
        "reconstructions",
        "manifold",
        "scatter",
        "traversal",
        "uncertainty",
        "pixel-likelihood",
        "curves",
        "interpolation",
        "aggregate-samples",
    ],
)
def test_plot_every_kind_writes_a_png_with_content(kind, digits_run, tmp_path):
    from PIL import Image

    out = tmp_path / f"{kind}.png"
    assert (
        main(
            [
                "plot",
                kind,
                "--model",
                str(digits_run),
                "--dataset",
                "digits",
                "--limit",
                "60",
                "--num-images",
                "4",
                "--num-samples",
                "8",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    pixels = np.asarray(Image.open(out).convert("L"), dtype=np.float32)
    assert pixels.std() > 5


def test_vamp_run_shows_its_pseudo_inputs(digits_run, tmp_path, capsys):
    from PIL import Image

    run = tmp_path / "vamp"
    argv = ["train", "--dataset", "digits", "--limit", "200", "--epochs", "1", "--latent-dim", "2", "--seed", "0"]
    argv += ["--prior", "vamp", "--num-components", "9", "--no-progress", "--score-limit", "20", "--out", str(run)]
    assert main(argv) == 0
    assert json.loads((run / "config.json").read_text())["prior"] == "vamp"
    assert (run / "pseudo_inputs.png").is_file()
    out = tmp_path / "u.png"
    assert main(["plot", "pseudo-inputs", "--model", str(run), "--num-images", "3", "--out", str(out)]) == 0
    assert np.asarray(Image.open(out).convert("L"), dtype=np.float32).std() > 5
    capsys.readouterr()
    assert main(["plot", "pseudo-inputs", "--model", str(digits_run), "--out", str(tmp_path / "n.png")]) == 2
    assert "needs a model with prior='vamp'; this one has 'normal'" in capsys.readouterr().err


def test_plots_ask_for_images_only_when_they_need_them(digits_run, tmp_path, capsys):
    # A 2-d latent space is its own manifold plane: no images needed. A scatter of codes needs them.
    out = tmp_path / "m.png"
    assert main(["plot", "manifold", "--model", str(digits_run), "--grid-size", "5", "--out", str(out)]) == 0
    assert out.is_file()
    assert main(["plot", "scatter", "--model", str(digits_run), "--out", str(tmp_path / "s.png")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["tfpvae: error: Figure 'scatter' needs images: `--dataset NAME` or `--input FILE`."]


def test_plot_roc_and_histogram_need_anomalous(digits_run, tmp_path, capsys):
    assert (
        main(["plot", "roc", "--model", str(digits_run), "--dataset", "digits", "--out", str(tmp_path / "r.png")]) == 2
    )
    assert "--anomalous" in capsys.readouterr().err
    assert (
        main(
            [
                "plot",
                "histogram",
                "--model",
                str(digits_run),
                "--dataset",
                "digits",
                "--anomalous",
                "digits",
                "--limit",
                "30",
                "--num-samples",
                "4",
                "--out",
                str(tmp_path / "h.png"),
            ]
        )
        == 0
    )


def test_interpolate_writes_paths(digits_run, tmp_path):
    out = tmp_path / "paths.npz"
    assert (
        main(
            [
                "interpolate",
                "--model",
                str(digits_run),
                "--dataset",
                "digits",
                "--indices",
                "0",
                "1",
                "2",
                "3",
                "--steps",
                "5",
                "--method",
                "linear",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    with np.load(out) as d:
        assert d["images"].shape == (2, 5, 8, 8, 1) and d["latents"].shape == (2, 5, 2)
        np.testing.assert_allclose(d["latents"][:, 2], d["latents"][:, [0, 4]].mean(axis=1), atol=1e-5)
    assert (
        main(
            [
                "interpolate",
                "--model",
                str(digits_run),
                "--dataset",
                "digits",
                "--indices",
                "0",
                "1",
                "2",
                "--out",
                str(out),
            ]
        )
        == 2
    )


def test_train_writes_figures_scores_and_evolution(tmp_path, capsys):
    run = tmp_path / "run"
    assert (
        main(
            [
                "train",
                "--dataset",
                "digits",
                "--epochs",
                "2",
                "--limit",
                "200",
                "--latent-dim",
                "2",
                "--seed",
                "1",
                "--no-progress",
                "--evolution",
                "--score-limit",
                "50",
                "--out",
                str(run),
            ]
        )
        == 0
    )
    for name in (
        "manifold.png",
        "latent_scatter.png",
        "interpolation.png",
        "evolution.gif",
        "reconstructions_by_epoch.png",
        "scores.csv",
        "evaluation.json",
    ):
        assert (run / name).is_file(), name
    from PIL import Image

    assert Image.open(run / "evolution.gif").n_frames == 3  # before training and after each epoch
    ev = json.loads((run / "evaluation.json").read_text())
    assert ev["num_images"] == 50 and ev["iwae_nll"] <= -ev["elbo"] + 1e-6 + 3 * ev["iwae_nll_stderr"]
    # Trained on dynamic binarisations, scored on the fixed one `evaluate --binarize-seed 0` uses.
    assert ev["binarize_seed"] == 0
    # 50 of the 200 test images, spread over the split (a split sorted by class still shows
    # every class), each binarised as `score --binarize-seed 0` binarises it in the whole split.
    assert ev["split_images"] == 200 and ev["selection"].startswith("evenly spaced")
    with open(run / "scores.csv") as f:
        rows = list(csv.DictReader(f))
    idx = [int(r["id"]) for r in rows]
    np.testing.assert_array_equal(idx, evenly_spaced(200, 50))
    log_p = np.array([float(r["log_prob"]) for r in rows])
    np.testing.assert_allclose(-log_p.mean(), ev["iwae_nll"], rtol=1e-6)
    argv = ["score", "--model", str(run), "--dataset", "digits", "--limit", "200", "--num-samples", "100"]
    gaps = {}
    for binarize_seed in ("0", "1"):
        out = tmp_path / f"whole{binarize_seed}.csv"
        assert main([*argv, "--binarize-seed", binarize_seed, "--score", "log_prob", "--out", str(out)]) == 0
        with open(out) as f:
            whole = np.array([float(r["log_prob"]) for r in csv.DictReader(f)])
        gaps[binarize_seed] = np.abs(log_p - whole[idx]).mean()
    # The same binary images as seed 0 draws in the whole split: only the importance-sampling
    # draws differ (k=100; measured 0.06 nats per image). Another binarisation: 0.47.
    assert gaps["0"] < 0.15 < 0.3 < gaps["1"]


def test_run_scores_of_a_whole_small_split_are_evaluates(tmp_path, capsys):
    run = tmp_path / "run"
    argv = ["train", "--dataset", "digits", "--limit", "60", "--epochs", "1", "--latent-dim", "2", "--seed", "0"]
    assert main([*argv, "--no-progress", "--out", str(run)]) == 0
    ev = json.loads((run / "evaluation.json").read_text())
    assert ev["selection"] == "all" and ev["num_images"] == ev["split_images"] == ev["limit"] == 60
    capsys.readouterr()  # the training log
    argv = ["evaluate", "--model", str(run), "--dataset", "digits", "--limit", "60", "--num-samples", "100"]
    assert main([*argv, "--binarize-seed", "0", "--quiet"]) == 0
    evaluated = json.loads(capsys.readouterr().out)
    np.testing.assert_allclose(ev["iwae_nll"], evaluated["iwae_nll"], rtol=1e-6)
    np.testing.assert_allclose(ev["iwae_nll_stderr"], evaluated["iwae_nll_stderr"], rtol=1e-6)


def test_train_on_one_test_image_skips_the_figures_that_need_more(tmp_path, capsys):
    run = tmp_path / "run"
    argv = ["train", "--dataset", "digits", "--limit", "1", "--epochs", "1", "--seed", "0", "--no-progress"]
    assert main([*argv, "--out", str(run)]) == 0
    err = capsys.readouterr().err
    for name, needed in (("manifold", 3), ("latent_scatter", 2), ("interpolation", 2)):
        assert f"{name}.png skipped: it needs >= {needed} test images; got 1" in err
        assert not (run / f"{name}.png").exists()
    assert (run / "reconstructions.png").is_file() and (run / "samples.png").is_file()
    assert json.loads((run / "evaluation.json").read_text())["num_images"] == 1


def test_scores_depend_only_on_image_id_and_seed(digits_run, tmp_path):
    """Split, re-batched and shuffled inputs give the same rows: draws are keyed by (id, seed)."""
    from PIL import Image

    from tfpvae.datasets import load_split

    x = load_split("digits", "test")[0][:30]
    folder = tmp_path / "pngs"
    folder.mkdir()
    for i, image in enumerate(x):
        prefix = "a" if i % 2 else "b"  # two interleaved halves, each its own glob
        Image.fromarray(np.round(image[..., 0] * 255).astype(np.uint8)).save(folder / f"{prefix}{i:02d}.png")
    common = ["--model", str(digits_run), "--num-samples", "8", "--binarize-seed", "4", "--quiet"]

    def rows(*argv):
        out = tmp_path / f"s{len(list(tmp_path.glob('s*.csv')))}.csv"
        assert main(["score", *common, *argv, "--out", str(out)]) == 0
        with open(out, newline="") as f:
            return {r[0]: r for r in list(csv.reader(f))[1:]}

    whole = rows("--input", str(folder))
    assert len(whole) == 30
    assert rows("--input", str(folder), "--batch-size", "7") == whole
    split = {**rows("--input", str(folder / "a*.png")), **rows("--input", str(folder / "b*.png"), "--batch-size", "3")}
    assert split == whole
    # Another seed changes every row.
    other = rows("--input", str(folder), "--seed", "1")
    assert all(other[k][2] != whole[k][2] for k in whole)


def test_train_flags_for_the_best_likelihood_are_kept_for_resume(tmp_path, monkeypatch, capsys):
    import tfpvae.training

    calls = []
    real_train = tfpvae.training.train

    def spy(*args, **kwargs):
        calls.append(kwargs)
        return real_train(*args, **kwargs)

    monkeypatch.setattr(tfpvae.training, "train", spy)
    run = tmp_path / "run"
    common = ["--no-progress", "--score-limit", "20"]
    argv = ["train", "--dataset", "digits", "--limit", "200", "--epochs", "2", "--latent-dim", "2", "--seed", "0"]
    argv += ["--train-samples", "2", "--kl-warmup-epochs", "3", "--lr-schedule", "cosine", "--out", str(run)]
    assert main([*argv, "--dropout", "0.25", "--binarize", "none", *common]) == 0
    config = json.loads((run / "config.json").read_text())
    assert config["train_samples"] == 2 and config["dropout"] == 0.25
    # Trained on the grey values (--binarize none): those are what it scored.
    assert config["binarize"] == "none"
    assert json.loads((run / "evaluation.json").read_text())["binarize_seed"] is None
    saved = json.loads((run / "train_args.json").read_text())
    assert saved["kl_warmup_epochs"] == 3 and saved["lr_schedule"] == "cosine"
    assert calls[-1]["kl_warmup_epochs"] == 3 and calls[-1]["lr_schedule"] == "cosine"
    # Resumed without the flags (or with others): the run's own schedule and config continue.
    resume = ["train", "--resume", str(run), "--epochs", "3", "--lr-schedule", "constant", "--latent-dim", "4"]
    assert main([*resume, *common]) == 0
    assert calls[-1]["kl_warmup_epochs"] == 3 and calls[-1]["lr_schedule"] == "cosine" and calls[-1]["resume"]
    err = capsys.readouterr().err
    assert "--lr-schedule constant ignored: the resumed run keeps its own (cosine)" in err
    assert "--latent-dim 4 ignored: the resumed run keeps its own (2)" in err
    # train_args.json holds the new total, which a later --resume without --epochs continues to.
    assert json.loads((run / "train_args.json").read_text())["epochs"] == 3
    from tfpvae.model import load

    model = load(run)
    assert model.config.train_samples == 2 and model.config.dropout == 0.25
    assert len(model.training_history["loss"]) == 3
    # A run folder written before these flags existed resumes with no warm-up and a constant rate.
    for key in ("kl_warmup_epochs", "lr_schedule"):
        del saved[key]
    (run / "train_args.json").write_text(json.dumps(saved))
    assert main(["train", "--resume", str(run), "--epochs", "4", *common]) == 0
    assert calls[-1]["kl_warmup_epochs"] == 0 and calls[-1]["lr_schedule"] == "constant"
    # One whose train_args.json lacks a key with no default is refused in one line.
    del saved["dataset"]
    (run / "train_args.json").write_text(json.dumps(saved))
    capsys.readouterr()
    assert main(["train", "--resume", str(run), "--epochs", "5", *common]) == 2
    assert "train_args.json lacks dataset: not written by tfpvae train" in capsys.readouterr().err


@pytest.mark.parametrize(
    "flags,match",
    [
        (["--train-samples", "0"], "--train-samples"),
        (["--kl-warmup-epochs", "-1"], "--kl-warmup-epochs"),
        (["--kl-warmup-epochs", "two"], "--kl-warmup-epochs"),
        (["--lr-schedule", "linear"], "--lr-schedule"),
    ],
)
def test_bad_best_likelihood_flags_exit_2_naming_the_flag(flags, match, capsys):
    with pytest.raises(SystemExit) as e:
        main(["train", "--dataset", "digits", "--out", "r", *flags])
    assert e.value.code == 2
    assert match in capsys.readouterr().err.strip().splitlines()[-1]


def test_dropout_outside_a_fraction_is_a_one_line_error(tmp_path, capsys):
    # The flag is checked by VAEConfig's own rule while the arguments parse.
    with pytest.raises(SystemExit) as e:
        main("train --dataset digits --dropout 1.5 --out".split() + [str(tmp_path / "r")])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "argument --dropout: value must be a finite number in [0.0, 1.0); got 1.5" in err[0]
    assert not (tmp_path / "r").exists()


def test_iwae_with_an_autoencoder_is_a_one_line_error(tmp_path, capsys):
    argv = ["train", "--dataset", "digits", "--model-type", "ae", "--train-samples", "3", "--out", str(tmp_path / "r")]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "`--train-samples` > 1 needs model_type='vae'" in err[0]


def test_train_early_stopping_validates_on_held_out_training_images(tmp_path, monkeypatch, capsys):
    import tfpvae.training

    calls = []
    real_train = tfpvae.training.train

    def spy(*args, **kwargs):
        calls.append((len(args[1]), len(kwargs["validation_data"]), kwargs["early_stopping"]))
        return real_train(*args, **kwargs)

    monkeypatch.setattr(tfpvae.training, "train", spy)
    run = tmp_path / "run"
    argv = ["train", "--dataset", "digits", "--limit", "200", "--epochs", "4", "--latent-dim", "2", "--seed", "0"]
    argv += ["--early-stopping", "2", "--no-progress", "--score-limit", "20", "--out", str(run)]
    assert main(argv) == 0
    assert calls == [(180, 20, 2)]  # the last 10% of the training images, never the test split
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert 1 <= report["best_epoch"] <= report["epochs"] <= 4
    assert json.loads((run / "train_args.json").read_text())["early_stopping"] == 2


class _TrainCalled(Exception):
    """Raised in place of training, once the CLI has prepared its arguments."""


def _stop_at_the_train_call(monkeypatch) -> list:
    """The validation_data each `tfpvae train` passes to training.train, which then stops it."""
    import tfpvae.training

    seen = []

    def stop_at_the_call(*args, **kwargs):  # only the arguments matter here
        seen.append(kwargs["validation_data"])
        raise _TrainCalled

    monkeypatch.setattr(tfpvae.training, "train", stop_at_the_call)
    return seen


@pytest.mark.parametrize(("flag", "expected"), [(None, 60), ("25", 25), ("0", 0)])
def test_train_validation_images_limits_the_per_epoch_validation(tmp_path, monkeypatch, flag, expected):
    seen = _stop_at_the_train_call(monkeypatch)
    run = tmp_path / "run"
    argv = ["train", "--dataset", "digits", "--limit", "60", "--out", str(run)]
    argv += [] if flag is None else ["--validation-images", flag]
    with pytest.raises(_TrainCalled):
        main(argv)
    x_test = load_split("digits", "test")[0][:60]
    if expected:
        # N test images spread over the split: a split sorted by class still validates on every class.
        np.testing.assert_array_equal(seen[0], x_test[evenly_spaced(60, expected)])
    else:
        assert seen[0] is None
    saved = json.loads((run / "train_args.json").read_text())["validation_images"]
    assert saved == (None if flag is None else int(flag))  # a resumed run validates the same way


def test_train_refuses_early_stopping_without_validation(tmp_path, capsys):
    argv = ["train", "--dataset", "digits", "--limit", "60", "--early-stopping", "2", "--validation-images", "0"]
    assert main([*argv, "--out", str(tmp_path / "run")]) == 2
    assert "`--validation-images` 0 turns validation off, which `--early-stopping` needs" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_train_early_stopping_uses_the_valid_split_of_binarized_mnist(tmp_path, monkeypatch, data_dir):
    seen = _stop_at_the_train_call(monkeypatch)
    argv = ["train", "--dataset", "binarized_mnist", "--data-dir", str(data_dir), "--limit", "50"]
    argv += ["--early-stopping", "3", "--out", str(tmp_path / "run")]
    with pytest.raises(_TrainCalled):
        main(argv)
    valid = load_split("binarized_mnist", "valid", data_dir)[0][:50]
    np.testing.assert_array_equal(seen[0], valid)


def test_train_from_streamed_files(tmp_path, capsys):
    """train --input streams PNG files; the run folder is as from a named dataset, without scores."""
    from PIL import Image

    import tfpvae
    from tfpvae.datasets import load_split

    x = load_split("digits", "train")[0][:300]
    folder = tmp_path / "pngs"
    folder.mkdir()
    for i, image in enumerate(x):
        Image.fromarray(np.round(image[..., 0] * 255).astype(np.uint8)).save(folder / f"{i:03d}.png")
    argv = ["train", "--input", str(folder / "*.png"), "--epochs", "2", "--latent-dim", "2", "--seed", "0"]
    assert main([*argv, "--no-progress", "--out", str(tmp_path / "run")]) == 0
    captured = capsys.readouterr()
    assert "pass --validation-input to score held-out images" in captured.err
    model = tfpvae.load(tmp_path / "run")
    assert model.config.input_shape == (8, 8, 1) and len(model.training_history["loss"]) == 2
    assert (tmp_path / "run" / "samples.png").is_file() and not (tmp_path / "run" / "scores.csv").exists()
    assert json.loads((tmp_path / "run" / "train_args.json").read_text())["input"] == str(folder / "*.png")
    # Streamed input and named datasets do not mix; early stopping needs held-out files.
    for extra, message in (
        (["--dataset", "digits"], "`--dataset` applies to named datasets only"),
        (["--early-stopping", "2"], "`--early-stopping` with `--input` needs `--validation-input`"),
    ):
        assert main([*argv, *extra, "--out", str(tmp_path / "other")]) == 2
        assert message in capsys.readouterr().err
