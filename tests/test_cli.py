import contextlib
import csv
import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

import tfpvae
from tfpvae.cli import main
from tfpvae.datasets import load_split
from tfpvae.subsets import evenly_spaced


def _png(path) -> np.ndarray:
    """The PNG figure at `path` as grey pixels (height, width) in 0..255, checked to show something.

    A real PNG, at least 60 pixels each way (one 8x8 image cell at 1 inch and 120 dpi is about
    100), and not one flat colour.
    """
    from PIL import Image

    with Image.open(path) as image:
        assert image.format == "PNG", (path, image.format)
        pixels = np.asarray(image.convert("L"), dtype=np.float32)
    assert min(pixels.shape) >= 60 and pixels.std() > 5, (path, pixels.shape, pixels.std())
    return pixels


def _csv_rows(path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_train_sample_info_round_trip_on_digits(tmp_path, capsys):
    import tfpvae

    run = tmp_path / "run"
    command = "train --dataset digits --epochs 2 --limit 300 --latent-dim 2 --seed 0 --no-progress"
    assert main(f"{command} --out {run}".split()) == 0
    for name in ("config.json", "weights.npz", "metadata.json"):
        assert (run / name).is_file(), name
    for name in ("samples.png", "reconstructions.png", "training_curves.png"):
        _png(run / name)
    # history.csv: one row per epoch, the same numbers as the history saved with the model.
    rows = _csv_rows(run / "history.csv")
    assert list(rows[0])[:5] == ["epoch", "loss", "nll", "kl", "elbo"] and [r["epoch"] for r in rows] == ["1", "2"]
    history = json.loads((run / "metadata.json").read_text())["history"]
    assert set(rows[0]) == {"epoch", *history}
    for key, values in history.items():
        assert [float(r[key]) for r in rows] == values, key
    for r in rows:  # beta = 1 and no warm-up: loss = nll + kl = -elbo
        nll, kl = float(r["nll"]), float(r["kl"])
        assert float(r["loss"]) == pytest.approx(nll + kl, rel=1e-5)
        assert float(r["elbo"]) == pytest.approx(-(nll + kl), rel=1e-5)

    model = tfpvae.load(run)
    assert main(f"sample --model {run} -n 6 --seed 1 --out {tmp_path / 's.npy'}".split()) == 0
    samples = np.load(tmp_path / "s.npy")
    assert samples.shape == (6, 8, 8, 1) and 0 <= samples.min() and samples.max() <= 1
    np.testing.assert_array_equal(samples, model.sample(6, seed=1))
    assert main(f"sample --model {run} -n 6 --seed 1 --out {tmp_path / 's.png'}".split()) == 0
    height, width = _png(tmp_path / "s.png").shape
    assert 1.2 < width / height < 1.8, (width, height)  # 6 images: a grid of 3 columns by 2 rows
    capsys.readouterr()
    assert main(f"info --model {run}".split()) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["config"]["latent_dim"] == 2 and info["epochs_trained"] == 2 and info["num_parameters"] > 1000
    assert info["num_parameters"] == sum(int(np.prod(w.shape)) for w in model.trainable_weights)
    assert info["final_metrics"] == {key: values[-1] for key, values in history.items()}


@pytest.mark.parametrize(
    ("damage", "message"), [(b"\x80", "config.json is not UTF-8 text"), (b"{", "config.json is not valid JSON")]
)
def test_info_of_a_damaged_config_is_a_one_line_error(tmp_path, capsys, damage, message):
    tfpvae.VAE(input_shape=(8, 8, 1), latent_dim=2, seed=0).save(tmp_path / "m")
    (tmp_path / "m" / "config.json").write_bytes(damage + (tmp_path / "m" / "config.json").read_bytes())
    assert main(f"info --model {tmp_path / 'm'}".split()) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("tfpvae: error:") and message in err[0], err
    assert "valid JSON" not in err[0] or damage == b"{", err  # one cause, not one wrapped in another


@pytest.mark.parametrize(
    "command,match",
    [
        ("sample --model /nonexistent/run --out x.png", "does not exist"),
        ("train --dataset binarized_mnist --data-dir /nonexistent --out r", "not found"),
    ],
)
def test_user_errors_print_one_line_and_exit_2(command, match, capsys, monkeypatch, tmp_path):
    monkeypatch.setenv("TFPVAE_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("HOME", str(tmp_path))
    assert main(command.split()) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("tfpvae: error:") and match in err[0]


@pytest.mark.parametrize(
    "command, match",
    [
        ("train --dataset cifar --out r", "argument --dataset: invalid choice: 'cifar'"),
        ("train --epochs -1", "argument --epochs: expected an integer >= 1, got '-1'"),
        ("detect --model m --target-fpr 2", "argument --target-fpr: expected a number in (0.0, 1.0)"),
        ("sample", "the following arguments are required: --model, --out"),
        ("train --dataset digits --latent 4", "unrecognized arguments: --latent 4"),  # no abbreviations
        ("sample --model m --out s.jpg", "argument --out: expected a file name ending in .png or .npy"),
        ("plot samples --model m --out p.gif", "ending in .png or .pdf or .svg, got 'p.gif'"),
        ("interpolate --model m --dataset digits --out i.npy", "ending in .png or .npz"),
        ("detect --model m --seed -1", "argument --seed: expected an integer in [0, 2147483647], got '-1'"),
        ("score --model m --binarize-seed 2147483648", "argument --binarize-seed: expected an integer in"),
        ("detect --model m --limit 3", "argument --limit: expected an integer >= 4, got '3'"),
        # JSON, and so a saved config, has no NaN or infinity: refused as the flags parse.
        *(
            (f"train --dataset digits --out r --option width={value}", f"pair with finite numbers, got 'width={value}'")
            for value in ("1e999", "NaN", "Infinity", "[1,-Infinity]", '{"a":NaN}')
        ),
    ],
)
def test_argparse_errors_are_one_line_and_exit_2(command, match, capsys):
    with pytest.raises(SystemExit) as e:
        main(command.split())
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


# The commands that read a trained model use `trained_digits_dir` (conftest): `trained_digits`
# saved as a model folder, which they only read. `trained_digits` itself recomputes their numbers.


@pytest.fixture(scope="module")
def digits_test_split():
    """The digits test split, (images, labels): what `--dataset digits` reads."""
    return load_split("digits", "test")


def test_evaluate_prints_consistent_json(trained_digits_dir, trained_digits, digits_test_split, capsys):
    capsys.readouterr()
    command = f"evaluate --model {trained_digits_dir} --dataset digits --num-samples 16 --limit 50"
    assert main(f"{command} --quiet".split()) == 0
    r = json.loads(capsys.readouterr().out)
    assert r["num_images"] == 50 and r["num_samples"] == 16
    assert r["iwae_nll"] <= -r["elbo"] + 3 * r["elbo_stderr"]  # the IWAE bound is tighter
    assert r["bits_per_dim"] == pytest.approx(r["iwae_nll"] / (64 * np.log(2)))
    assert r["iwae_nll_stderr"] > 0 and r["iwae_nll_mc_stderr"] > 0
    # The first 50 test images, the default seed 0: the model's own estimates give the same numbers.
    x = digits_test_split[0][:50]
    log_p = trained_digits.log_prob(x, 16, seed=0)
    elbo = trained_digits.elbo(x, 1, seed=0)
    assert r["iwae_nll"] == pytest.approx(-log_p.mean(), rel=1e-6)
    assert r["iwae_nll_stderr"] == pytest.approx(log_p.std(ddof=1) / np.sqrt(50), rel=1e-6)
    assert r["elbo"] == pytest.approx(elbo.mean(), rel=1e-6)


def test_evaluate_and_train_take_a_precision(trained_digits_dir, trained_digits, digits_test_split, tmp_path, capsys):
    capsys.readouterr()
    command = f"evaluate --model {trained_digits_dir} --dataset digits --num-samples 16 --limit 50 --quiet"
    assert main(f"{command} --precision bfloat16".split()) == 0
    r = json.loads(capsys.readouterr().out)
    log_p = trained_digits.log_prob(digits_test_split[0][:50], 16, seed=0, precision="bfloat16")
    assert r["precision"] == "bfloat16" and r["iwae_nll"] == pytest.approx(-log_p.mean(), rel=1e-6)
    run = tmp_path / "run"
    train = f"train --dataset digits --limit 200 --epochs 1 --latent-dim 2 --seed 0 --out {run}"
    assert main(f"{train} --precision bfloat16 --no-progress --score-limit 20".split()) == 0
    assert json.loads((run / "train_args.json").read_text())["precision"] == "bfloat16"
    with pytest.raises(SystemExit) as e:
        main(f"evaluate --model {run} --dataset digits --limit 5 --precision half".split())
    assert e.value.code == 2 and "--precision: invalid choice: 'half'" in capsys.readouterr().err


def test_score_writes_one_row_per_image(trained_digits_dir, trained_digits, digits_test_split, tmp_path):
    out = tmp_path / "scores.csv"
    command = f"score --model {trained_digits_dir} --dataset digits --limit 20 --num-samples 8"
    assert main(f"{command} --out {out} --quiet".split()) == 0
    rows = _csv_rows(out)
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
    # The first 20 test images with their labels; each row's draws are keyed by its id (the row
    # index) and the default seed 0, as the model's own estimates key them.
    x, y = digits_test_split[0][:20], digits_test_split[1][:20]
    assert [int(r["label"]) for r in rows] == y.tolist()
    np.testing.assert_allclose([float(r["log_prob"]) for r in rows], trained_digits.log_prob(x, 8, seed=0), rtol=1e-5)
    np.testing.assert_allclose([float(r["elbo"]) for r in rows], trained_digits.elbo(x, 8, seed=0), rtol=1e-5)
    np.save(tmp_path / "imgs.npy", np.zeros((3, 8, 8), np.float32))
    command = f"score --model {trained_digits_dir} --input {tmp_path / 'imgs.npy'} --num-samples 4 --out {out}"
    assert main(f"{command} --score log_prob --quiet --overwrite".split()) == 0
    rows = _csv_rows(out)
    assert [r["id"] for r in rows] == ["0", "1", "2"] and not any(r["label"] for r in rows)
    assert list(rows[0]) == ["id", "label", "log_prob", "log_prob_stderr"]
    expected = trained_digits.log_prob(np.zeros((3, 8, 8, 1), np.float32), 4, seed=0)
    np.testing.assert_allclose([float(r["log_prob"]) for r in rows], expected, rtol=1e-5)


def test_score_writes_every_label_and_each_score_once(trained_digits_dir, tmp_path):
    # Labels of an .npz: -3 and -1 are labels (blank is for a record without one), and a
    # score named twice is one column.
    np.savez(tmp_path / "x.npz", x=np.zeros((4, 8, 8, 1), np.float32), y=np.array([1, -1, -3, 2]))
    out = tmp_path / "s.csv"
    command = f"score --model {trained_digits_dir} --input {tmp_path / 'x.npz'} --num-samples 2 --out {out}"
    assert main(f"{command} --score elbo elbo --quiet".split()) == 0
    rows = _csv_rows(out)
    assert list(rows[0]) == ["id", "label", "elbo"]
    assert [r["label"] for r in rows] == ["1", "-1", "-3", "2"]


def test_a_tfrecord_without_labels_for_some_records_leaves_theirs_blank(trained_digits_dir, tmp_path):
    from tfpvae._keras import tf

    def record(label):
        image = tf.io.encode_png(np.zeros((8, 8, 1), np.uint8)).numpy()
        feature = {"image": tf.train.Feature(bytes_list=tf.train.BytesList(value=[image]))}
        if label is not None:
            feature["label"] = tf.train.Feature(int64_list=tf.train.Int64List(value=[label]))
        return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()

    with tf.io.TFRecordWriter(str(tmp_path / "a.tfrecord")) as writer:
        for label in (4, None, -1):
            writer.write(record(label))
    out = tmp_path / "s.csv"
    command = f"score --model {trained_digits_dir} --input {tmp_path / 'a.tfrecord'} --score elbo --num-samples 2"
    assert main(f"{command} --out {out} --quiet".split()) == 0
    assert [r["label"] for r in _csv_rows(out)] == ["4", "", "-1"]


@pytest.mark.parametrize(
    "extra, message",
    [
        ("--input {tmp}/nowhere.png", "`--input` '{tmp}/nowhere.png' does not exist"),
        ("--input {tmp}/notes.txt", "`--input`"),
        ("--dataset digits --typical-nll nan", "argument --typical-nll: expected a finite number, got 'nan'"),
    ],
)
def test_score_input_errors_are_one_line_naming_the_flag(trained_digits_dir, tmp_path, capsys, extra, message):
    (tmp_path / "notes.txt").write_text("not an image")
    command = f"score --model {trained_digits_dir} --out {tmp_path / 's.csv'} {extra.format(tmp=tmp_path)}"
    with pytest.raises(SystemExit) if "nan" in extra else contextlib.nullcontext():
        assert main(command.split()) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("tfpvae") and message.format(tmp=tmp_path) in err[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]


def _folder_with_a_bad_png(tmp_path):
    """tmp_path/imgs holding a.png and b.png (8x8 grey) and c.png, which is not a PNG."""
    folder = tmp_path / "imgs"
    folder.mkdir()
    for name in ("a.png", "b.png"):
        Image.fromarray(np.zeros((8, 8), np.uint8)).save(folder / name)
    (folder / "c.png").write_bytes(b"not a png")
    return folder


def test_a_bad_record_stops_score_without_leaving_half_a_csv(trained_digits_dir, tmp_path, capsys):
    folder = _folder_with_a_bad_png(tmp_path)
    out = tmp_path / "s.csv"
    command = f"score --model {trained_digits_dir} --input {folder} --score elbo --batch-size 1 --out {out} --quiet"
    assert main(command.split()) == 2
    assert "c.png" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["imgs"]  # no s.csv, no s.csv.partial


def test_the_errors_file_always_belongs_to_the_csv_beside_it(trained_digits_dir, tmp_path, capsys):
    folder = _folder_with_a_bad_png(tmp_path)
    out = tmp_path / "s.csv"
    errors = tmp_path / "s.csv.errors.csv"
    command = f"score --model {trained_digits_dir} --input {folder} --score elbo --out {out} --quiet --overwrite"
    command = command.split()
    assert main([*command, "--skip-bad"]) == 0
    first = (out.read_text(), errors.read_text())
    assert "c.png" in first[1] and len(first[0].splitlines()) == 3
    assert main(command) == 2  # stops at c.png: the earlier CSV and its errors file stay as they were
    assert (out.read_text(), errors.read_text()) == first
    (folder / "c.png").unlink()
    assert main(command) == 0  # a clean run: no stale errors file beside its CSV
    assert sorted(p.name for p in tmp_path.iterdir()) == ["imgs", "s.csv", "s.csv.json"]


@pytest.mark.parametrize(
    "command, message",
    [
        ("sample -n 4 --temperature nan --out {tmp}/s.png", "argument --temperature: expected a number > 0.0"),
        ("plot samples --temperature -2 --out {tmp}/p.png", "argument --temperature: expected a number > 0.0"),
        ("interpolate --dataset digits --limit 1 --out {tmp}/i.png", "needs at least 2 images to pair"),
        ("plot manifold --dataset digits --limit 2 --out {tmp}/p.png", "needs >= 3 images"),
        ("plot scatter --dataset digits --limit 1 --out {tmp}/p.png", "needs >= 2 images for a PCA projection"),
        ("plot aggregate-samples --dataset digits --limit 3 --out {tmp}/p.png", "needs >= 10 images"),
    ],
)
def test_what_the_images_or_flags_cannot_give_is_a_one_line_error(tmp_path_factory, tmp_path, capsys, command, message):
    model = tmp_path_factory.mktemp("model") / "latent4"  # more than 2 latent dimensions: plots project by PCA
    tfpvae.save(tfpvae.VAE(input_shape=(8, 8, 1), latent_dim=4, seed=0), model)
    argv = [*command.format(tmp=tmp_path).split(), "--model", str(model)]
    with pytest.raises(SystemExit) if "temperature" in command else contextlib.nullcontext():
        assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("tfpvae") and message in err[0], err
    assert list(tmp_path.iterdir()) == []


def test_exporting_a_plain_autoencoder_is_a_one_line_error(tmp_path, capsys):
    ae = tfpvae.VAE(input_shape=(8, 8, 1), latent_dim=2, model_type="ae", seed=0)
    tfpvae.save(ae, tmp_path / "ae")
    assert main(f"export --model {tmp_path / 'ae'} --out {tmp_path / 'served'}".split()) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "`--model`" in err[0] and "plain autoencoder" in err[0]
    assert not (tmp_path / "served").exists()


def test_score_typicality_needs_reference(trained_digits_dir, tmp_path, capsys):
    command = f"score --model {trained_digits_dir} --dataset digits --out {tmp_path / 's.csv'} --score typicality"
    assert main(command.split()) == 2
    assert "--typical-nll" in capsys.readouterr().err


def test_images_of_another_shape_or_output_folder_are_refused_before_any_work(
    trained_digits_dir, data_dir, tmp_path, capsys
):
    model = f"--model {trained_digits_dir}"
    data = f"--data-dir {shlex.quote(str(data_dir))}"  # a path of the machine's: it may hold spaces
    mnist = f"--dataset mnist {data} --limit 10"
    np.save(tmp_path / "grey.npy", np.zeros((3, 8, 8, 1), np.float32))
    cases = [
        (
            f"score {model} {mnist} --out {tmp_path / 's.csv'}",
            f"`--dataset mnist` images are 28x28x1 but the model in {trained_digits_dir} takes 8x8x1 images",
        ),
        (f"evaluate {model} {mnist}", "`--dataset mnist` images are 28x28x1"),
        (f"detect {model} --normal digits --anomalous mnist {data}", "`--anomalous mnist` images are 28x28x1"),
        (
            f"plot roc {model} --dataset digits --anomalous mnist --out {tmp_path / 'r.png'}",
            "`--anomalous mnist` images are 28x28x1",
        ),
        (
            f"score {model} --dataset digits --input {tmp_path / 'grey.npy'} --out {tmp_path / 's.csv'}",
            "Give `--dataset` or `--input`, not both",
        ),
        (
            f"score {model} --dataset digits --out {tmp_path / 'missing' / 's.csv'}",
            f"folder {tmp_path / 'missing'} does not exist",
        ),
        (
            f"score {model} --dataset digits --out {tmp_path / 'grey.npy' / 's.csv'}",
            f"folder {tmp_path / 'grey.npy'} is a file, not a folder",
        ),
        (
            f"plot samples {model} --binarize-seed 0 --out {tmp_path / 'r.png'}",
            "`--binarize-seed` applies to the histogram and roc figures, not to 'samples'",
        ),
        (
            f"plot scatter {model} --dataset digits --anomalous mnist --out {tmp_path / 'r.png'}",
            "`--anomalous` applies to the histogram and roc figures, not to 'scatter'",
        ),
    ]
    for command, match in cases:
        assert main(shlex.split(command)) == 2, command
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and match in err[0], err
    assert not (tmp_path / "s.csv").exists() and not (tmp_path / "r.png").exists()


def test_detect_reports_every_score(trained_digits_dir, digits_test_split, capsys):
    capsys.readouterr()
    command = f"detect --model {trained_digits_dir} --normal digits --anomalous digits --limit 40 --num-samples 8"
    assert main(f"{command} --quiet".split()) == 0
    result = json.loads(capsys.readouterr().out)
    report = result.pop("scores")
    from tfpvae.anomaly import DETECTOR_SCORES, compute_scores
    from tfpvae.likelihood import LikelihoodEstimator
    from tfpvae.model import load

    assert list(report) == list(DETECTOR_SCORES)  # "combined", the detector's default, first
    # Normal against the same distribution: no score can separate them much.
    assert all(0.2 < r["auroc"] < 0.8 for r in report.values())
    assert result == {
        "normal": "digits",
        "anomalous": "digits",
        "num_calibration": 40,
        "num_combined_reference": 20,
        "num_typicality_reference": 20,
        "num_normal_evaluated": 40,
        "num_anomalous": 40,
        "num_samples": 8,
        "seed": 0,
        "binarize_seed": None,
        "target_fpr": 0.05,
        "precision": "float32",
    }
    # Typicality's threshold, computed independently: AnomalyDetector's seeded split of the 40
    # calibration images, 20 setting the threshold and 20 giving the typical NLL (never the same).
    digits = digits_test_split[0]
    normal = digits[evenly_spaced(len(digits), 80)]  # --limit 40: 80 normal images spread over the split
    calibration = normal[np.random.default_rng(0).permutation(80)[:40]]
    estimator = LikelihoodEstimator.from_model(load(trained_digits_dir))
    nll = -compute_scores(estimator, calibration, "log_prob", num_samples=8, seed=0, progress=False)["log_prob"]
    split = np.random.default_rng(0).permutation(40)
    # The conformal threshold at 5% of 20 calibration scores: the lowest (p = 1/21 <= 0.05 < 2/21).
    expected = np.min(-np.abs(nll[split[:20]] - nll[split[20:]].mean()))
    np.testing.assert_allclose(report["typicality"]["threshold"], expected, rtol=1e-6)


def test_detect_notes_thresholds_too_few_images_can_set(trained_digits_dir, capsys):
    capsys.readouterr()
    command = f"detect --model {trained_digits_dir} --normal digits --anomalous digits --limit 12 --num-samples 2"
    assert main(f"{command} --quiet".split()) == 0
    captured = capsys.readouterr()
    report = json.loads(captured.out)["scores"]  # strict JSON: no -Infinity
    # 12 calibration images (6 for combined and typicality) reach p = 1/13 (1/7) at the least: above the
    # default 0.05, below 0.2.
    assert {name: r["threshold"] for name, r in report.items()} == dict.fromkeys(report)
    assert captured.err.splitlines() == [
        f"tfpvae: note: the thresholds of {', '.join(report)} flag no image (threshold null): their calibration "
        "images are too few for --target-fpr 0.05; use a larger --limit or --target-fpr."
    ]
    assert main(f"{command} --target-fpr 0.2 --quiet".split()) == 0
    captured = capsys.readouterr()
    assert all(r["threshold"] is not None for r in json.loads(captured.out)["scores"].values())
    assert "note" not in captured.err and "Warning" not in captured.err


def test_a_plain_autoencoder_is_scored_by_its_distortion_only(tmp_path, digits_test_split, capsys):
    import tfpvae

    ae = tfpvae.VAE(input_shape=(8, 8, 1), latent_dim=2, model_type="ae", seed=0)
    ae.compile()
    ae.save(tmp_path / "ae")
    model = f"--model {tmp_path / 'ae'}"
    data = "--dataset digits --limit 20"
    scoring = f"{data} --num-samples 4 --quiet"
    # score, without --score: the scores this model can give (with one, a clear refusal).
    assert main(f"score {model} {scoring} --out {tmp_path / 's.csv'}".split()) == 0
    rows = _csv_rows(tmp_path / "s.csv")
    assert list(rows[0]) == ["id", "label", "distortion"] and len(rows) == 20
    # Its code is a point mass: the distortion score is log p(x | z) at the encoder's code, in every draw.
    x = digits_test_split[0][:20]
    expected = ae.decode(ae.encode(x).mean()).log_prob(x).numpy()
    np.testing.assert_allclose([float(r["distortion"]) for r in rows], expected, rtol=1e-5)
    capsys.readouterr()
    assert main(f"score {model} {scoring} --score elbo --out {tmp_path / 'e.csv'}".split()) == 2
    assert "`elbo` needs a VAE; this model is a plain autoencoder" in capsys.readouterr().err
    # detect and the ROC figure: distortion alone.
    command = f"detect {model} --normal digits --anomalous digits --limit 20 --num-samples 4 --quiet"
    assert main(command.split()) == 0
    assert set(json.loads(capsys.readouterr().out)["scores"]) == {"distortion"}
    assert main(f"{command} --batch-size 5".split()) == 2  # refused before any scoring
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "`--batch-size` tests batches by their likelihood" in err[0], err
    assert main(f"plot roc {model} {data} --anomalous digits --out {tmp_path / 'roc.png'}".split()) == 0
    height, width = _png(tmp_path / "roc.png").shape
    assert 0.8 < width / height < 1.25, (width, height)  # one square ROC panel


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
def test_plot_every_kind_writes_a_png_with_content(kind, trained_digits_dir, tmp_path):
    out = tmp_path / f"{kind}.png"
    data = "--dataset digits --limit 60 --num-images 4 --num-samples 8"
    assert main(f"plot {kind} --model {trained_digits_dir} {data} --out {out}".split()) == 0
    _png(out)


@pytest.mark.slow  # a VampPrior training run with its figures and scores: about 15 s
def test_vamp_run_shows_its_pseudo_inputs(trained_digits_dir, tmp_path, capsys):
    run = tmp_path / "vamp"
    command = "train --dataset digits --limit 200 --epochs 1 --latent-dim 2 --seed 0"
    assert main(f"{command} --prior vamp --num-components 9 --no-progress --score-limit 20 --out {run}".split()) == 0
    assert json.loads((run / "config.json").read_text())["prior"] == "vamp"
    _png(run / "pseudo_inputs.png")
    out = tmp_path / "u.png"
    assert main(f"plot pseudo-inputs --model {run} --num-images 3 --out {out}".split()) == 0
    _png(out)
    capsys.readouterr()
    assert main(f"plot pseudo-inputs --model {trained_digits_dir} --out {tmp_path / 'n.png'}".split()) == 2
    assert "needs a prior with pseudo-inputs (prior='vamp'); this model's prior is 'normal'" in capsys.readouterr().err


def test_plots_ask_for_images_only_when_they_need_them(trained_digits_dir, tmp_path, capsys):
    # A 2-d latent space is its own manifold plane: no images needed. A scatter of codes needs them.
    out = tmp_path / "m.png"
    assert main(f"plot manifold --model {trained_digits_dir} --grid-size 5 --out {out}".split()) == 0
    height, width = _png(out).shape
    assert 0.85 < width / height < 1.15, (width, height)  # a square grid of decoded images
    assert main(f"plot scatter --model {trained_digits_dir} --out {tmp_path / 's.png'}".split()) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["tfpvae: error: Figure 'scatter' needs images: `--dataset NAME` or `--input FILE`."]


def test_plot_roc_and_histogram_need_anomalous(trained_digits_dir, tmp_path, capsys):
    model = f"--model {trained_digits_dir}"
    assert main(f"plot roc {model} --dataset digits --out {tmp_path / 'r.png'}".split()) == 2
    err = capsys.readouterr().err
    # The library's argument has no flag of that name: it is not made one.
    assert "(CLI: --anomalous)" in err and "`x_anomalous`" in err and "--x-anomalous" not in err
    command = f"plot histogram {model} --dataset digits --anomalous digits --limit 30 --num-samples 4"
    assert main(f"{command} --out {tmp_path / 'h.png'}".split()) == 0
    _png(tmp_path / "h.png")


def test_sample_with_a_temperature_that_overflows_is_a_one_line_error(trained_digits_dir, tmp_path, capsys):
    command = f"sample --model {trained_digits_dir} --num-samples 4 --temperature 1e39 --out {tmp_path / 's.npy'}"
    assert main(command.split()) == 2
    assert capsys.readouterr().err.strip() == (
        "tfpvae: error: `--temperature`=1e+39 spreads the prior's codes beyond float32's range; use a smaller one."
    )
    assert not (tmp_path / "s.npy").exists()


def test_library_messages_name_only_the_commands_own_flags():
    from tfpvae.cli import build_parser
    from tfpvae.cli._common import as_flags

    args = build_parser().parse_args("plot samples --model m --out s.png".split())
    message = "`temperature`, `num_samples`, `options`, `kind`, `progress`, `imports`, `x_anomalous`, `argv`"
    assert as_flags(message, args) == (
        "`--temperature`, `--num-samples`, `options`, `kind`, `progress`, `imports`, `x_anomalous`, `argv`"
    )
    train = build_parser().parse_args("train --dataset digits --out r".split())
    assert as_flags("`options` and `latent_dim`", train) == "`--option` and `--latent-dim`"


def test_plot_curves_of_a_model_never_trained_says_so(tmp_path, capsys):
    import tfpvae

    model = tfpvae.VAE(input_shape=(8, 8, 1), latent_dim=2, seed=0)
    model.compile()
    model.save(tmp_path / "untrained")
    assert main(f"plot curves --model {tmp_path / 'untrained'} --out {tmp_path / 'c.png'}".split()) == 2
    assert capsys.readouterr().err.strip() == (
        "tfpvae: error: Figure 'curves' needs a training history; this model has none (saved before any training)."
    )


def test_interpolate_writes_paths(trained_digits_dir, trained_digits, digits_test_split, tmp_path):
    out = tmp_path / "paths.npz"
    command = f"interpolate --model {trained_digits_dir} --dataset digits"
    assert main(f"{command} --indices 0 1 2 3 --steps 5 --method linear --out {out}".split()) == 0
    with np.load(out) as d:
        assert d["images"].shape == (2, 5, 8, 8, 1) and d["latents"].shape == (2, 5, 2)
        np.testing.assert_allclose(d["latents"][:, 2], d["latents"][:, [0, 4]].mean(axis=1), atol=1e-5)
        paths = {key: d[key] for key in ("images", "latents", "log_prior", "pairs")}
    # Pairs (0, 1) and (2, 3) of the test split: straight lines between their posterior means,
    # decoded by the model, with log p(z) of the standard normal prior along them.
    np.testing.assert_array_equal(paths["pairs"], [[0, 1], [2, 3]])
    means = trained_digits.encode(digits_test_split[0][:4]).mean().numpy()
    np.testing.assert_allclose(paths["latents"][:, 0], means[[0, 2]], atol=1e-5)
    np.testing.assert_allclose(paths["latents"][:, -1], means[[1, 3]], atol=1e-5)
    decoded = trained_digits.decode(paths["latents"].reshape(10, 2)).mean().numpy().reshape(2, 5, 8, 8, 1)
    np.testing.assert_allclose(paths["images"], decoded, atol=1e-5)
    z = paths["latents"].astype(np.float64)
    np.testing.assert_allclose(paths["log_prior"], -0.5 * (z**2).sum(-1) - np.log(2 * np.pi), rtol=1e-5)
    assert main(f"{command} --indices 0 1 2 --out {out}".split()) == 2


@pytest.mark.slow  # a training run with --evolution and two k=100 `score` runs: about 13 s
def test_train_writes_figures_scores_and_evolution(tmp_path, capsys):
    from PIL import Image

    run = tmp_path / "run"
    command = "train --dataset digits --epochs 2 --limit 200 --latent-dim 2 --seed 1 --no-progress"
    assert main(f"{command} --evolution --score-limit 50 --out {run}".split()) == 0
    for name in ("manifold.png", "latent_scatter.png", "interpolation.png", "reconstructions_by_epoch.png"):
        _png(run / name)
    with Image.open(run / "evolution.gif") as gif:
        assert gif.n_frames == 3  # before training and after each epoch
    ev = json.loads((run / "evaluation.json").read_text())
    assert ev["num_images"] == 50 and ev["iwae_nll"] <= -ev["elbo"] + 1e-6 + 3 * ev["iwae_nll_stderr"]
    # Trained on dynamic binarisations, scored on the fixed one `evaluate --binarize-seed 0` uses.
    assert ev["binarize_seed"] == 0
    # 50 of the 200 test images, spread over the split (a split sorted by class still shows
    # every class), each binarised as `score --binarize-seed 0` binarises it in the whole split.
    assert ev["split_images"] == 200 and ev["selection"].startswith("evenly spaced")
    rows = _csv_rows(run / "scores.csv")
    idx = [int(r["id"]) for r in rows]
    np.testing.assert_array_equal(idx, evenly_spaced(200, 50))
    log_p = np.array([float(r["log_prob"]) for r in rows])
    np.testing.assert_allclose(-log_p.mean(), ev["iwae_nll"], rtol=1e-6)
    command = f"score --model {run} --dataset digits --limit 200 --num-samples 100 --score log_prob"
    gaps = {}
    for binarize_seed in ("0", "1"):
        out = tmp_path / f"whole{binarize_seed}.csv"
        assert main(f"{command} --binarize-seed {binarize_seed} --out {out}".split()) == 0
        whole = np.array([float(r["log_prob"]) for r in _csv_rows(out)])
        gaps[binarize_seed] = np.abs(log_p - whole[idx]).mean()
    # The same binary images as seed 0 draws in the whole split: only the importance-sampling
    # draws differ (k=100; measured 0.06 nats per image). Another binarisation: 0.47.
    assert gaps["0"] < 0.15 < 0.3 < gaps["1"]


@pytest.mark.slow  # a training run and a k=100 evaluate: about 13 s
def test_run_scores_of_a_whole_small_split_are_evaluates(tmp_path, capsys):
    run = tmp_path / "run"
    command = "train --dataset digits --limit 60 --epochs 1 --latent-dim 2 --seed 0"
    assert main(f"{command} --no-progress --out {run}".split()) == 0
    ev = json.loads((run / "evaluation.json").read_text())
    assert ev["selection"] == "all" and ev["num_images"] == ev["split_images"] == ev["limit"] == 60
    capsys.readouterr()  # the training log
    command = f"evaluate --model {run} --dataset digits --limit 60 --num-samples 100"
    assert main(f"{command} --binarize-seed 0 --quiet".split()) == 0
    evaluated = json.loads(capsys.readouterr().out)
    np.testing.assert_allclose(ev["iwae_nll"], evaluated["iwae_nll"], rtol=1e-6)
    np.testing.assert_allclose(ev["iwae_nll_stderr"], evaluated["iwae_nll_stderr"], rtol=1e-6)


@pytest.mark.slow  # over 7 s; the fast tier skips it, CI runs it
def test_train_on_one_test_image_skips_the_figures_that_need_more(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(f"train --dataset digits --limit 1 --epochs 1 --seed 0 --no-progress --out {run}".split()) == 0
    err = capsys.readouterr().err
    for name, needed in (("manifold", 3), ("latent_scatter", 2), ("interpolation", 2)):
        assert f"{name}.png skipped: it needs >= {needed} test images; got 1" in err
        assert not (run / f"{name}.png").exists()
    for name in ("samples.png", "reconstructions.png"):
        _png(run / name)
    assert json.loads((run / "evaluation.json").read_text())["num_images"] == 1


@pytest.mark.slow  # five `score` runs: about 15 s
def test_scores_depend_only_on_image_id_and_seed(trained_digits_dir, digits_test_split, tmp_path):
    """Split, re-batched and shuffled inputs give the same rows: draws are keyed by (id, seed)."""
    from PIL import Image

    x = digits_test_split[0][:30]
    folder = tmp_path / "pngs"
    folder.mkdir()
    for i, image in enumerate(x):
        prefix = "a" if i % 2 else "b"  # two interleaved halves, each its own glob
        Image.fromarray(np.round(image[..., 0] * 255).astype(np.uint8)).save(folder / f"{prefix}{i:02d}.png")
    common = f"--model {trained_digits_dir} --num-samples 8 --binarize-seed 4 --quiet"

    def rows(flags):
        out = tmp_path / f"s{len(list(tmp_path.glob('s*.csv')))}.csv"
        assert main(f"score {common} {flags} --out {out}".split()) == 0
        with open(out, newline="") as f:
            return {r[0]: r for r in list(csv.reader(f))[1:]}

    whole = rows(f"--input {folder}")
    assert len(whole) == 30
    assert rows(f"--input {folder} --batch-size 7") == whole
    split = {**rows(f"--input {folder / 'a*.png'}"), **rows(f"--input {folder / 'b*.png'} --batch-size 3")}
    assert split == whole
    # Another seed changes every row.
    other = rows(f"--input {folder} --seed 1")
    assert all(other[k][2] != whole[k][2] for k in whole)


@pytest.fixture
def train_calls(monkeypatch):
    """The keyword arguments of every `tfpvae.training.train` call, which still trains."""
    import tfpvae.training

    calls = []
    real_train = tfpvae.training.train

    def spy(*args, **kwargs):
        calls.append(kwargs)
        return real_train(*args, **kwargs)

    monkeypatch.setattr(tfpvae.training, "train", spy)
    return calls


def test_train_time_budget_ends_the_run_and_is_kept(tmp_path, train_calls, capsys):
    from tfpvae.config import UNLIMITED_EPOCHS

    calls = train_calls
    run = tmp_path / "run"
    command = f"train --dataset digits --limit 200 --latent-dim 2 --seed 0 --no-progress --score-limit 20 --out {run}"
    assert main(f"{command} --time-budget 2 --lr-schedule linear".split()) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    saved = json.loads((run / "train_args.json").read_text())
    # No --epochs: the budget, not an epoch count, ended the run.
    assert saved["time_budget"] == 2.0 and saved["epochs"] == UNLIMITED_EPOCHS
    assert calls[-1]["time_budget"] == 2.0 and calls[-1]["lr_schedule"] == "linear"
    assert 1 <= summary["epochs"] < UNLIMITED_EPOCHS
    # A resumed run keeps its budget, spent already: it trains no further.
    assert main(f"train --resume {run} --no-progress --score-limit 20".split()) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["epochs"] == summary["epochs"]
    assert calls[-1]["time_budget"] == 2.0 and calls[-1]["resume"]
    # A larger budget on --resume is the run's new total: it trains on, and keeps it.
    from tfpvae.training import read_checkpoint_meta

    more = round(read_checkpoint_meta(run)["train_seconds"] + 2.0, 3)  # the first run may overrun 2 s
    assert main(f"train --resume {run} --time-budget {more} --no-progress --score-limit 20".split()) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["epochs"] > summary["epochs"]
    assert calls[-1]["time_budget"] == more and json.loads((run / "train_args.json").read_text())["time_budget"] == more
    with pytest.raises(SystemExit) as e:
        main(f"{command}2 --time-budget 0".split())
    assert e.value.code == 2 and "--time-budget" in capsys.readouterr().err


@pytest.mark.slow  # a training run resumed three times: about 35 s on 2 cores
def test_train_flags_for_the_best_likelihood_are_kept_for_resume(tmp_path, train_calls, capsys):
    calls = train_calls
    run = tmp_path / "run"
    common = "--no-progress --score-limit 20"
    command = "train --dataset digits --limit 200 --epochs 2 --latent-dim 2 --seed 0"
    command += f" --train-samples 2 --kl-warmup-epochs 3 --lr-schedule cosine --out {run}"
    assert main(f"{command} --dropout 0.25 --binarize none {common}".split()) == 0
    config = json.loads((run / "config.json").read_text())
    assert config["train_samples"] == 2 and config["dropout"] == 0.25
    # Trained on the grey values (--binarize none): those are what it scored.
    assert config["binarize"] == "none"
    assert json.loads((run / "evaluation.json").read_text())["binarize_seed"] is None
    saved = json.loads((run / "train_args.json").read_text())
    assert saved["kl_warmup_epochs"] == 3 and saved["lr_schedule"] == "cosine"
    assert calls[-1]["kl_warmup_epochs"] == 3 and calls[-1]["lr_schedule"] == "cosine"
    # Resumed without the flags (or with others): the run's own schedule and config continue.
    resume = f"train --resume {run} --epochs 3 --lr-schedule constant --latent-dim 4"
    assert main(f"{resume} {common}".split()) == 0
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
    assert main(f"train --resume {run} --epochs 4 {common}".split()) == 0
    assert calls[-1]["kl_warmup_epochs"] == 0 and calls[-1]["lr_schedule"] == "constant"
    # One whose train_args.json lacks a key with no default is refused in one line.
    del saved["dataset"]
    (run / "train_args.json").write_text(json.dumps(saved))
    capsys.readouterr()
    assert main(f"train --resume {run} --epochs 5 {common}".split()) == 2
    assert "train_args.json lacks dataset: not written by tfpvae train" in capsys.readouterr().err


@pytest.mark.parametrize(
    "flags,match",
    [
        ("--train-samples 0", "--train-samples"),
        ("--kl-warmup-epochs -1", "--kl-warmup-epochs"),
        ("--kl-warmup-epochs two", "--kl-warmup-epochs"),
        ("--lr-schedule step", "--lr-schedule"),
    ],
)
def test_bad_best_likelihood_flags_exit_2_naming_the_flag(flags, match, capsys):
    with pytest.raises(SystemExit) as e:
        main(f"train --dataset digits --out r {flags}".split())
    assert e.value.code == 2
    assert match in capsys.readouterr().err.strip().splitlines()[-1]


def test_dropout_outside_a_fraction_is_a_one_line_error(tmp_path, capsys):
    # The flag is checked by VAEConfig's own rule while the arguments parse.
    with pytest.raises(SystemExit) as e:
        main(f"train --dataset digits --dropout 1.5 --out {tmp_path / 'r'}".split())
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "argument --dropout: expected a number in [0.0, 1.0), got '1.5'" in err[0]
    assert not (tmp_path / "r").exists()


def test_options_the_config_cannot_hold_are_a_one_line_error_naming_the_flag(tmp_path, capsys):
    deep = "[" * 40 + "]" * 40  # deeper than a config's options may nest
    assert main(f"train --dataset digits --out {tmp_path / 'r'} --option a={deep}".split()) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("tfpvae: error: `--option` nests lists and dicts more than"), err
    assert not (tmp_path / "r").exists()


def test_resume_notes_each_option_it_ignores(tmp_path, monkeypatch, capsys):
    import tfpvae.runs

    run = tmp_path / "run"
    command = f"train --dataset digits --limit 64 --epochs 1 --hidden-units 8 --latent-dim 2 --no-progress --out {run}"
    assert main(f"{command} --score-limit 8 --option width=8 --option norm=batch --option flag=true".split()) == 0
    # Only the notes are tested here: the resumed training is not run.
    calls = []
    monkeypatch.setattr(tfpvae.runs, "train_run", lambda *a, **k: calls.append((a, k)) or SimpleNamespace(chief=False))
    capsys.readouterr()
    resume = f"train --resume {run} --epochs 2 --latent-dim 3"
    assert main(f"{resume} --option width=4 --option norm=batch --option depth=2 --option flag=1".split()) == 0
    notes = [line for line in capsys.readouterr().err.splitlines() if line.startswith("tfpvae:")]
    assert notes == [
        "tfpvae: note: --latent-dim 3 ignored: the resumed run keeps its own (2).",
        "tfpvae: note: --option width=4 ignored: the resumed run keeps its own (width=8).",
        "tfpvae: note: --option depth=2 ignored: the resumed run keeps its own (no depth).",
        # Compared as JSON, as the saved config holds them: 1 is not true.
        "tfpvae: note: --option flag=1 ignored: the resumed run keeps its own (flag=true).",
    ]
    # The run goes on with its own config and settings: none are passed on.
    ((args, kwargs),) = calls
    assert args == (str(run), None, None) and kwargs["resume"]
    # Options the run already has are no news.
    assert main(f"train --resume {run} --option norm=batch --option width=8".split()) == 0
    assert [line for line in capsys.readouterr().err.splitlines() if line.startswith("tfpvae:")] == []


def test_iwae_with_an_autoencoder_is_a_one_line_error(tmp_path, capsys):
    command = f"train --dataset digits --model-type ae --train-samples 3 --out {tmp_path / 'r'}"
    assert main(command.split()) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "`--train-samples` > 1 needs model_type='vae'" in err[0]


def test_early_stopping_without_images_to_hold_out_is_a_one_line_error(tmp_path, capsys):
    command = f"train --dataset digits --limit 1 --early-stopping 2 --epochs 1 --out {tmp_path / 'r'}"
    assert main(command.split()) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "`--early-stopping` needs at least 2 training images" in err[0]


def test_a_run_killed_before_its_first_checkpoint_starts_again(tmp_path, monkeypatch, capsys):
    # What a SIGKILL in the first epoch leaves: the settings file, no checkpoint, no model.
    import tfpvae.training

    run = tmp_path / "r"
    command = f"train --dataset digits --limit 64 --epochs 1 --no-progress --out {run}".split()

    def killed(*args, **kwargs):
        raise KeyboardInterrupt  # stands in for the kill: nothing after it is written

    monkeypatch.setattr(tfpvae.training, "train", killed)
    assert main(command) == 130
    monkeypatch.undo()
    assert sorted(p.name for p in run.iterdir() if not p.name.startswith(".")) == ["train_args.json"]
    assert main([*command[:-2], "--resume", str(run)]) == 2
    assert "stopped before its first checkpoint" in capsys.readouterr().err
    assert main(command) == 0  # the same command again: the folder holds no model to refuse for
    assert tfpvae.load(run).training_history["loss"]


@pytest.mark.slow  # a training run with early stopping, figures and scores: about 12 s
def test_train_early_stopping_validates_on_held_out_training_images(tmp_path, monkeypatch, capsys):
    import tfpvae.training

    calls = []
    real_train = tfpvae.training.train

    def spy(*args, **kwargs):
        calls.append((len(args[1]), len(kwargs["validation_data"]), kwargs["early_stopping"]))
        return real_train(*args, **kwargs)

    monkeypatch.setattr(tfpvae.training, "train", spy)
    run = tmp_path / "run"
    command = "train --dataset digits --limit 200 --epochs 4 --latent-dim 2 --seed 0"
    assert main(f"{command} --early-stopping 2 --no-progress --score-limit 20 --out {run}".split()) == 0
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
    command = f"train --dataset digits --limit 60 --out {run}"
    command += "" if flag is None else f" --validation-images {flag}"
    with pytest.raises(_TrainCalled):
        main(command.split())
    x_test = load_split("digits", "test")[0][:60]
    if expected:
        # N test images spread over the split: a split sorted by class still validates on every class.
        np.testing.assert_array_equal(seen[0], x_test[evenly_spaced(60, expected)])
    else:
        assert seen[0] is None
    saved = json.loads((run / "train_args.json").read_text())["validation_images"]
    assert saved == (None if flag is None else int(flag))  # a resumed run validates the same way


def test_train_refuses_early_stopping_without_validation(tmp_path, capsys):
    command = f"train --dataset digits --limit 60 --early-stopping 2 --validation-images 0 --out {tmp_path / 'run'}"
    assert main(command.split()) == 2
    assert "`--validation-images` 0 turns validation off, which `--early-stopping` needs" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_train_early_stopping_uses_the_valid_split_of_binarized_mnist(tmp_path, monkeypatch, data_dir):
    seen = _stop_at_the_train_call(monkeypatch)
    command = f"train --dataset binarized_mnist --data-dir {shlex.quote(str(data_dir))} --limit 50"
    with pytest.raises(_TrainCalled):
        main(shlex.split(f"{command} --early-stopping 3 --out {tmp_path / 'run'}"))
    valid = load_split("binarized_mnist", "valid", data_dir)[0][:50]
    np.testing.assert_array_equal(seen[0], valid)


@pytest.mark.slow  # over 7 s; the fast tier skips it, CI runs it
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
    command = f"train --input {folder / '*.png'} --epochs 2 --latent-dim 2 --seed 0"
    assert main(f"{command} --no-progress --out {tmp_path / 'run'}".split()) == 0
    captured = capsys.readouterr()
    assert "pass --validation-input to score held-out images" in captured.err
    model = tfpvae.load(tmp_path / "run")
    assert model.config.input_shape == (8, 8, 1) and len(model.training_history["loss"]) == 2
    _png(tmp_path / "run" / "samples.png")
    assert not (tmp_path / "run" / "scores.csv").exists()
    assert json.loads((tmp_path / "run" / "train_args.json").read_text())["input"] == str(folder / "*.png")
    # Streamed input and named datasets do not mix; early stopping needs held-out files.
    for extra, message in (
        ("--dataset digits", "`--dataset` applies to named datasets only"),
        ("--early-stopping 2", "`--early-stopping` with `--input` needs `--validation-input`"),
    ):
        assert main(f"{command} {extra} --out {tmp_path / 'other'}".split()) == 2
        assert message in capsys.readouterr().err


def _one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("tfpvae: error: "), err
    return err[0][len("tfpvae: error: ") :]


def _weights_digest(folder) -> str:
    return json.loads((Path(folder) / "metadata.json").read_text())["weights_sha256"]


SMALL_RUN = "train --dataset digits --limit 100 --epochs 1 --latent-dim 2 --no-progress --score-limit 20"


@pytest.mark.slow  # three small training runs: about 30 s
def test_train_refuses_a_run_folder_unless_resumed_or_overwritten(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(f"{SMALL_RUN} --seed 0 --evolution --out {run}".split()) == 0
    before = _weights_digest(run), (run / "checkpoint.npz").read_bytes()
    capsys.readouterr()
    assert main(f"{SMALL_RUN} --seed 1 --out {run}".split()) == 2
    message = _one_error_line(capsys)
    assert message.startswith(f"`--out` {run} already holds a trained model or run (checkpoint.npz")
    assert message.endswith(f"): pass `--resume {run}` to continue it or `--overwrite` to replace it.")
    assert (_weights_digest(run), (run / "checkpoint.npz").read_bytes()) == before
    assert main(f"{SMALL_RUN} --seed 1 --out {run} --overwrite --resume {run}".split()) == 2
    assert "not both" in _one_error_line(capsys)
    (run / "my_notes.txt").write_text("mine")
    assert main(f"{SMALL_RUN} --seed 1 --out {run} --overwrite".split()) == 0
    assert _weights_digest(run) != before[0] and json.loads((run / "train_args.json").read_text())["seed"] == 1
    # The old run's files went first: no evolution.gif of the old run mixes into the new one.
    assert not (run / "evolution.gif").exists() and (run / "my_notes.txt").read_text() == "mine"
    assert main(f"train --resume {run} --epochs 2 --no-progress --score-limit 20".split()) == 0


@pytest.mark.slow  # a training subprocess (TensorFlow import, then epochs) and two runs beside it: about 40 s
def test_a_second_process_on_the_same_folder_fails_at_once_and_a_killed_one_blocks_nothing(tmp_path, capsys):
    from tfpvae.write_guard import OWNER_FILE

    run = tmp_path / "run"
    command = [sys.executable, "-m", "tfpvae", *f"{SMALL_RUN} --epochs 400 --seed 0 --out {run}".split()]
    first = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while not (run / OWNER_FILE).exists():  # the first run holds the folder
            assert time.monotonic() < deadline and first.poll() is None
            time.sleep(0.2)
        assert main(f"{SMALL_RUN} --seed 1 --out {run} --overwrite".split()) == 2
        assert first.poll() is None  # refused while the first run still holds the folder: it did not wait
        message = _one_error_line(capsys)
        assert message.startswith(f"{run} is in use by process {first.pid} on ")
        assert f"(tfpvae {SMALL_RUN} --epochs 400 --seed 0 --out {run}, since " in message
        assert message.endswith(": wait for it to finish or choose another folder.")
    finally:
        first.kill()  # SIGKILL: no clean-up runs
        first.wait()
    assert (run / OWNER_FILE).exists()  # the dead process's record stays; its lock does not
    assert main(f"{SMALL_RUN} --seed 1 --out {run} --overwrite".split()) == 0
    assert json.loads((run / "train_args.json").read_text())["seed"] == 1


def test_export_and_score_refuse_an_existing_output_unless_overwritten(trained_digits_dir, tmp_path, capsys):
    import tensorflow as tf

    served = tmp_path / "served"
    export = f"export --model {trained_digits_dir} --out {served} --num-samples 4"
    assert main(export.split()) == 0
    pb = (served / "saved_model.pb").read_bytes()
    capsys.readouterr()
    assert main(export.split()) == 2
    assert _one_error_line(capsys) == (
        f"`--out` {served} already holds a SavedModel (saved_model.pb): pass `--overwrite` to replace it."
    )
    assert (served / "saved_model.pb").read_bytes() == pb
    assert main(f"{export} --overwrite".split()) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["served"]  # no staging folder left
    assert "score" in tf.saved_model.load(str(served)).signatures
    out = tmp_path / "scores.csv"
    out.write_text("hours of scores")
    assert main(f"score --model {trained_digits_dir} --dataset digits --limit 5 --out {out} --quiet".split()) == 2
    assert _one_error_line(capsys) == f"`--out` {out} already exists: pass `--overwrite` to replace it."
    assert out.read_text() == "hours of scores"


@pytest.fixture
def small_disk(tmp_path):
    """A 16 MB tmpfs: a real full disk (needs root, as CI has, and a system that allows mounts)."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    disk = tmp_path / "disk"
    disk.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(disk)], capture_output=True).returncode:
        pytest.skip("this system does not allow mounting a tmpfs")
    yield disk
    subprocess.run(["umount", "-l", str(disk)], check=True)


def _fill(disk) -> Path:
    """Fills the file system of `disk` to the last byte; returns the filler file."""
    filler = disk / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT)  # unbuffered: nothing left to flush at close
    try:
        while True:
            os.write(fd, b"\0" * 4096)
    except OSError:
        pass
    finally:
        os.close(fd)
    return filler


@pytest.mark.slow  # two small training runs on a real tmpfs: about 25 s
def test_a_full_disk_and_a_read_only_one_end_in_one_line_with_the_last_checkpoint_intact(small_disk, capsys):
    from tfpvae.training import read_checkpoint_meta

    run = small_disk / "run"
    assert main(f"{SMALL_RUN} --seed 0 --out {run}".split()) == 0
    kept = (run / "checkpoint.npz").read_bytes(), _weights_digest(run)
    filler = _fill(small_disk)
    capsys.readouterr()
    assert main(f"train --resume {run} --epochs 3 --no-progress".split()) == 2
    message = _one_error_line(capsys)
    # The new epoch total goes to train_args.json first: the first write the full disk refuses.
    assert message.startswith(f"cannot write {run / 'train_args.json'}: No space left on device; ")
    assert message.endswith(
        f"{run} keeps its checkpoint of epoch 1 and a complete model: resume from it once the "
        "file system accepts writes"
    )
    assert (run / "checkpoint.npz").read_bytes() == kept[0] and _weights_digest(run) == kept[1]
    assert read_checkpoint_meta(run)["epoch"] == 1 and tfpvae.load(run) is not None
    assert not [p.name for p in run.iterdir() if p.name.endswith(".tmp")]  # no half-written temporary
    filler.unlink()
    subprocess.run(["mount", "-o", "remount,ro", str(small_disk)], check=True)
    assert main(f"train --resume {run} --epochs 3 --no-progress".split()) == 2
    assert _one_error_line(capsys).startswith(f"cannot lock {run / '.tfpvae.lock'}: Read-only file system")
    subprocess.run(["mount", "-o", "remount,rw", str(small_disk)], check=True)
    assert main(f"train --resume {run} --epochs 2 --no-progress --score-limit 20".split()) == 0
    assert read_checkpoint_meta(run)["epoch"] == 2


@pytest.fixture
def world_readable_dir():
    """A folder another user can reach (pytest's own tmp_path is private to root)."""
    import shutil
    import tempfile

    folder = Path(tempfile.mkdtemp(prefix="tfpvae-perm-", dir="/tmp"))
    folder.chmod(0o755)
    yield folder
    for path in [folder, *folder.rglob("*")]:
        if path.is_dir():
            path.chmod(0o755)
    shutil.rmtree(folder)


@pytest.mark.slow  # a training run, then a resume in a subprocess as another user: about 25 s
def test_a_folder_without_write_permission_ends_in_one_line_with_the_run_intact(world_readable_dir, capsys):
    import shutil

    if os.geteuid() != 0 or not shutil.which("setpriv"):
        pytest.skip("running as another user needs root and setpriv (root itself may write anywhere)")
    run = world_readable_dir / "run"
    assert main(f"{SMALL_RUN} --seed 0 --out {run}".split()) == 0
    kept = (run / "checkpoint.npz").read_bytes(), _weights_digest(run)
    home = world_readable_dir / "home"
    home.mkdir(mode=0o777)
    home.chmod(0o777)
    (run / ".tfpvae.lock").chmod(0o666)  # the lock may be taken; nothing else may be written
    run.chmod(0o555)
    env = {**os.environ, "HOME": str(home), "MPLCONFIGDIR": str(home)}
    nobody = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
    command = [*nobody, sys.executable, "-m", "tfpvae", "train", "--resume", str(run), "--epochs", "2", "--no-progress"]
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    errors = [line for line in result.stderr.splitlines() if line.startswith("tfpvae")]
    assert result.returncode == 2 and len(errors) == 1, result.stderr[-3000:]
    assert errors[0] == (
        f"tfpvae: error: cannot write {run / 'train_args.json'}: Permission denied; {run} keeps its checkpoint of "
        "epoch 1 and a complete model: resume from it once the file system accepts writes"
    )
    assert ((run / "checkpoint.npz").read_bytes(), _weights_digest(run)) == kept
