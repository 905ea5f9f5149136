"""tfpvae.beam: the Beam pipeline writes the rows `tfpvae score --input` writes, and lists every bad record.

Inputs are real digits test images written at test time as PNG files and TFRecord shards,
with corrupt records among them; the reference is `tfpvae score` on the same input, or
`compute_scores` on the arrays the files were written from.
"""

from __future__ import annotations

import csv
import glob
import io
import re
import subprocess
import sys
from pathlib import Path

import apache_beam as beam
import numpy as np
import pytest
from PIL import Image

import tfpvae
from tfpvae import beam as tfpvae_beam
from tfpvae import beam_handler
from tfpvae._keras import tf
from tfpvae.anomaly import compute_scores
from tfpvae.beam import build_pipeline, run
from tfpvae.bulk import format_row, score_columns
from tfpvae.cli import main as tfpvae_main
from tfpvae.datasets import load_split
from tfpvae.streaming import iter_batches
from tfpvae.write_guard import OutputExistsError

NUM_PNG = 24
SHARDS = 3
PER_SHARD = 50


def png_bytes(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG")
    return buf.getvalue()


def example(image: bytes, label: int) -> bytes:
    feature = {
        "image": tf.train.Feature(bytes_list=tf.train.BytesList(value=[image])),
        "label": tf.train.Feature(int64_list=tf.train.Int64List(value=[int(label)])),
    }
    return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()


@pytest.fixture(scope="module")
def digits_test():
    """(uint8 (359, 8, 8) digits test images, int labels (359,))."""
    x, y = load_split("digits", "test")
    return np.round(x[..., 0] * 255).astype(np.uint8), np.asarray(y)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    x_train, _ = load_split("digits", "train")
    model = tfpvae.VAE(input_shape=(8, 8, 1), latent_dim=3, seed=0)
    model.compile()
    model.fit(x_train, epochs=2, batch_size=32, verbose=0)
    path = tmp_path_factory.mktemp("beam") / "run"
    model.save(path)
    return path


@pytest.fixture(scope="module")
def inputs(tmp_path_factory, digits_test):
    """A folder of PNG files and TFRecord shards; returns (folder, the ids that must fail)."""
    u8, y = digits_test
    folder = tmp_path_factory.mktemp("inputs") / "images"
    folder.mkdir()
    for i in range(NUM_PNG):
        # Commas and quotes in the names: the id column must be quoted as the csv module quotes it.
        (folder / (f"digit,{i:03d}.png" if i % 2 else f'digit"{i:03d}".png')).write_bytes(png_bytes(u8[i]))
    (folder / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n but not an image")
    (folder / "large.png").write_bytes(png_bytes(np.zeros((28, 28), np.uint8)))  # not the model's 8x8
    start = NUM_PNG
    for s in range(SHARDS):
        with tf.io.TFRecordWriter(str(folder / f"shard-{s}.tfrecord")) as writer:
            for i in range(start, start + PER_SHARD):
                image = b"garbage" if (s, i - start) == (1, 7) else png_bytes(u8[i])
                writer.write(example(image, y[i]))
        start += PER_SHARD
    bad = {str(folder / "corrupt.png"), str(folder / "large.png"), f"{folder / 'shard-1.tfrecord'}:7"}
    return folder, bad


def read_shards(pattern: str, header: str) -> list[list[str]]:
    """The rows of every shard matching `pattern`, each shard's first line checked to be `header`."""
    rows = []
    files = sorted(Path(p) for p in glob.glob(pattern))
    assert files, f"no shard matches {pattern}"
    for path in files:
        text = path.read_text()
        assert text.split("\n", 1)[0] == header, (path, text[:200])
        rows += list(csv.reader(io.StringIO(text)))[1:]
    return rows


def without_addresses(reason: str) -> str:
    # Pillow's message names a BytesIO object by its memory address, which differs between processes.
    return re.sub(r"0x[0-9a-f]+", "0x?", reason)


@pytest.mark.slow  # two Beam worker processes and a `tfpvae score` run: about a minute
def test_two_worker_processes_write_the_rows_of_tfpvae_score(run_dir, inputs, tmp_path, capsys):
    folder, bad = inputs
    flags = ["--model", str(run_dir), "--input", str(folder), "--num-samples", "16", "--seed", "5"]
    reference = tmp_path / "reference.csv"
    assert tfpvae_main(["score", *flags, "--out", str(reference), "--skip-bad", "--quiet"]) == 0
    prefix = tmp_path / "beam" / "scores"
    prefix.parent.mkdir()
    out = subprocess.run(
        [sys.executable, "-m", "tfpvae.beam", *flags, "--output", str(prefix)]
        + ["--direct_num_workers", "2", "--direct_running_mode", "multi_processing"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    n_good = NUM_PNG + SHARDS * PER_SHARD - 1
    summary = out.stdout.strip().splitlines()[-1]
    assert summary.startswith(f"wrote {n_good} rows of scores") and f"; skipped {len(bad)} bad records" in summary

    ref_rows = list(csv.reader(reference.open(newline="")))
    header = ",".join(ref_rows[0])
    assert header == "id,label,log_prob,log_prob_stderr,elbo,rate,distortion,complexity"
    rows = read_shards(f"{prefix}-[0-9]*-of-*.csv", header)
    # Exact strings, not a tolerance: each image's draws are keyed by (id, seed) and the scoring
    # core's result for one image does not depend on the other images of its batch, so the rows
    # agree to the last printed digit whichever worker and batch scored them.
    assert sorted(rows) == sorted(ref_rows[1:])
    assert len(rows) == n_good and len({r[0] for r in rows}) == n_good
    assert sum("," in r[0] or '"' in r[0] for r in rows) == NUM_PNG  # ids came back whole through the quoting

    errors = read_shards(f"{prefix}-errors-*-of-*.csv", "id,reason")
    assert {e[0] for e in errors} == bad and len(errors) == len(bad)
    ref_errors = list(csv.reader((tmp_path / "reference.csv.errors.csv").open(newline="")))[1:]
    assert sorted((i, without_addresses(r)) for i, r in errors) == sorted(
        (i, without_addresses(r)) for i, r in ref_errors
    )
    reasons = dict(errors)
    assert reasons[str(folder / "large.png")] == "has shape (28, 28, 1); expected (8, 8, 1)."


def test_in_process_pipeline_scores_as_compute_scores(run_dir, digits_test, tmp_path):
    u8, y = digits_test
    folder = tmp_path / "few"
    folder.mkdir()
    for i in range(4):
        (folder / f"{i}.png").write_bytes(png_bytes(u8[i]))
    with tf.io.TFRecordWriter(str(folder / "few.tfrecord")) as writer:
        for i in range(4, 9):
            writer.write(example(png_bytes(u8[i]), y[i]))
    grey = np.linspace(0.0, 1.0, 3 * 64, dtype=np.float32).reshape(3, 8, 8)
    grey[2, 0, 0] = 1.5  # out of [0, 1]: a dead letter, as iter_batches refuses it
    np.save(folder / "grey.npy", grey)
    # The model from a file system that is not local (as gs:// would be): TensorFlow's in-memory
    # ram://, seen by the default runner's single worker, which runs in this process.
    remote = "ram://test_beam/run"
    tf.io.gfile.makedirs(remote)
    for path in run_dir.iterdir():
        tf.io.gfile.copy(str(path), f"{remote}/{path.name}", overwrite=True)
    prefix = tmp_path / "out"
    scores = ("log_prob", "elbo", "rate")
    with beam.Pipeline() as pipeline:  # the default runner: one worker, in memory
        outputs = build_pipeline(
            pipeline, remote, str(folder), prefix, scores=scores, num_samples=8, seed=3, binarize_seed=1, batch_size=4
        )
    assert outputs.columns == score_columns(scores) == ["log_prob", "log_prob_stderr", "elbo", "rate"]

    # Reference: the arrays the files were written from, scored directly under the ids they get.
    x = np.concatenate([u8[:9].astype(np.float32)[..., None] / np.float32(255), grey[:2, ..., None]])
    ids = [str(folder / f"{i}.png") for i in range(4)] + [f"{folder / 'few.tfrecord'}:{r}" for r in range(5)]
    ids += [f"{folder / 'grey.npy'}:{r}" for r in range(2)]  # several files: array rows are path:row
    labels = [None] * 4 + [int(v) for v in y[4:9]] + [None, None]
    values = compute_scores(
        run_dir_model(run_dir).likelihood, x, scores, num_samples=8, seed=3, binarize_seed=1, ids=ids, stderr=True
    )
    columns = outputs.columns
    expected = [
        format_row(image_id, label, {c: values[c][r] for c in columns}, columns)
        for r, (image_id, label) in enumerate(zip(ids, labels))
    ]
    rows = read_shards(f"{prefix}-[0-9]*-of-*.csv", "id,label," + ",".join(columns))
    assert sorted(rows) == sorted(expected)
    errors = read_shards(f"{prefix}-errors-*-of-*.csv", "id,reason")
    assert len(errors) == 1 and errors[0][0] == f"{folder / 'grey.npy'}:2"
    assert errors[0][1].startswith("pixel values must lie in [0, 1]") and errors[0][1].endswith(", 1.5].")


def test_workers_score_in_the_precision_they_are_given(run_dir, digits_test):
    u8, _ = digits_test
    x = u8[:6].astype(np.float32)[..., None] / np.float32(255)
    ids = [f"image{i}" for i in range(6)]
    handler = beam_handler.TfpvaeModelHandler(run_dir, ("log_prob",), num_samples=8, precision="bfloat16")
    scorer = handler.load_model()  # what each worker does once
    assert scorer.estimator.precision == "bfloat16"
    got = scorer(x, ids)["log_prob"]
    expected = compute_scores(scorer.model.estimator("bfloat16"), x, ("log_prob",), num_samples=8, seed=0, ids=ids)
    np.testing.assert_array_equal(got, expected["log_prob"])
    float32 = compute_scores(scorer.model.likelihood, x, ("log_prob",), num_samples=8, seed=0, ids=ids)["log_prob"]
    assert 0 < np.abs(got - float32).max() < 0.5
    with pytest.raises(ValueError, match="`precision` must be one of"):
        beam_handler.TfpvaeModelHandler(run_dir, ("log_prob",), precision="half")


_MODELS: dict = {}


def run_dir_model(path):
    if path not in _MODELS:
        _MODELS[path] = tfpvae.load(path)
    return _MODELS[path]


def test_ids_are_spelt_as_list_files_spells_them(run_dir, digits_test, tmp_path, monkeypatch):
    """A relative glob without a folder ("*.png") and a folder with "[" in its name: Beam's matcher
    lists and spells these differently from tf.io.gfile, and the ids must still be `tfpvae score`'s."""
    u8, _ = digits_test
    monkeypatch.chdir(tmp_path)
    Path("d[1]").mkdir()
    Path("dX1Y").mkdir()  # matched by an escaped "d?1?" pattern, and must not be read
    for i, path in enumerate(["top.png", "d[1]/a.png", "d[1]/b.png", "dX1Y/c.png", "odd[2].png"]):
        Path(path).write_bytes(png_bytes(u8[i]))
    source = ["*.png", "d[1]", "odd[2].png"]
    expected = sorted(i for batch in iter_batches(source, batch_size=100) for i in batch.ids)
    # "./odd[2].png" from the glob and "odd[2].png" named are one file, read once.
    assert expected == sorted(["top.png", "d[1]/a.png", "d[1]/b.png", "odd[2].png"])
    with beam.Pipeline() as pipeline:
        build_pipeline(pipeline, run_dir, source, "out", scores=["elbo"], num_samples=2)
    rows = read_shards("out-[0-9]*-of-*.csv", "id,label,elbo")
    assert sorted(r[0] for r in rows) == expected


def test_patterns_match_one_folder_level_as_tensorflow_globs_do(run_dir, digits_test, tmp_path, monkeypatch):
    """Beam's "**" crosses folders and its "?" matches "/"; TensorFlow's do not, and a folder
    named with a doubled "/" or "./" is found by both: every row once, with `tfpvae score`'s id."""
    u8, _ = digits_test
    monkeypatch.chdir(tmp_path)
    for i, path in enumerate(["nest/a/p.png", "nest/a/b/q.png", "dqx.png", "d/x.png", "f/r.png"]):
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_bytes(png_bytes(u8[i]))
    Path("f/looks.png").mkdir()  # a folder named like an image: neither lists it
    source = ["nest/**/*.png", "d?x.png", "f//", "./f"]
    expected = sorted(i for batch in iter_batches(source, batch_size=100) for i in batch.ids)
    assert expected == ["dqx.png", "f/r.png", "nest/a/p.png"]
    with beam.Pipeline() as pipeline:
        build_pipeline(pipeline, run_dir, source, "out", scores=["elbo"], num_samples=2)
    assert sorted(r[0] for r in read_shards("out-[0-9]*-of-*.csv", "id,label,elbo")) == expected


def test_a_listing_the_workers_do_not_repeat_scores_nothing(run_dir, digits_test, tmp_path, monkeypatch):
    # The build lists 2 files (as if a third were added before the workers matched 3):
    # the ids of array rows depend on the listing, so the pipeline refuses before reading any.
    u8, _ = digits_test
    for i in range(3):
        (tmp_path / f"{i}.png").write_bytes(png_bytes(u8[i]))
    real = tfpvae_beam.list_files
    monkeypatch.setattr(tfpvae_beam, "list_files", lambda source: real(source)[:2])
    with pytest.raises(Exception, match=r"\(3 matched, 2 listed\).*Nothing was scored"):
        with beam.Pipeline() as pipeline:
            build_pipeline(pipeline, run_dir, str(tmp_path), str(tmp_path / "out"), scores=["elbo"], num_samples=2)
    assert glob.glob(str(tmp_path / "out-*")) == []


@pytest.mark.parametrize(
    ("extra", "flag"),
    [
        (["--score", "log_prob", "nonsense"], "--score"),
        (["--score", "typicality"], "--typical-nll"),
        (["--seed", "-1"], "--seed"),
        (["--num-sample", "5"], "--num-sample"),  # a typo must not fall through to Beam and be ignored
        (["--input", "nowhere/*.png"], "--input"),
        (["--output", "no/such/folder/scores"], "--output"),
        (["--precision", "half"], "--precision"),
    ],
)
def test_flag_errors_are_one_line_naming_the_flag(run_dir, inputs, tmp_path, capsys, extra, flag):
    folder, _ = inputs
    argv = ["--model", str(run_dir), "--input", str(folder), "--output", str(tmp_path / "scores"), *extra]
    assert run(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("tfpvae.beam: error: ") and flag in err[0], err
    assert not list(tmp_path.glob("scores*"))


def test_existing_shards_are_refused_unless_overwritten(run_dir, inputs, tmp_path, capsys):
    folder, _ = inputs
    (tmp_path / "scores-00000-of-00001.csv").write_text("id,label,log_prob\nhours,,1.0\n")
    argv = ["--model", str(run_dir), "--input", str(folder), "--output", str(tmp_path / "scores")]
    assert run([*argv, "--score", "elbo", "--num-samples", "2"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        f"tfpvae.beam: error: `--output` {tmp_path / 'scores'} already holds score shards "
        "(scores-00000-of-00001.csv, ...): pass `--overwrite` to replace it."
    ]
    assert (tmp_path / "scores-00000-of-00001.csv").read_text().endswith("hours,,1.0\n")
    with pytest.raises(OutputExistsError, match=r"pass `overwrite=True` to replace it"):
        with beam.Pipeline() as pipeline:
            build_pipeline(pipeline, run_dir, folder, tmp_path / "scores", scores=["elbo"], num_samples=2)
    assert run([*argv, "--score", "elbo", "--num-samples", "2", "--overwrite"]) == 0
    assert "hours" not in (tmp_path / "scores-00000-of-00001.csv").read_text()


def test_a_missing_model_folder_is_named(tmp_path, inputs, capsys):
    folder, _ = inputs
    argv = ["--model", str(tmp_path / "no_run"), "--input", str(folder), "--output", str(tmp_path / "scores")]
    assert run(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("tfpvae.beam: error: `--model`") and "no_run" in err[0], err


def test_the_module_reports_a_flag_error_with_exit_status_2(tmp_path):
    argv = ["--model", str(tmp_path), "--input", "x", "--output", "y", "--score", "?"]
    out = subprocess.run([sys.executable, "-m", "tfpvae.beam", *argv], capture_output=True, text=True, timeout=120)
    last = out.stderr.strip().splitlines()[-1]
    assert out.returncode == 2 and last.startswith("tfpvae.beam: error: argument --score"), out.stderr[-2000:]


def test_the_handler_is_exported_from_tfpvae_beam():
    """Code and docs import the handler and its types from tfpvae.beam; they are beam_handler's own objects."""
    assert tfpvae_beam.TfpvaeModelHandler is beam_handler.TfpvaeModelHandler
    assert (tfpvae_beam.Example, tfpvae_beam.Row) == (beam_handler.Example, beam_handler.Row)
    assert tfpvae_beam.METRICS_NAMESPACE == beam_handler.METRICS_NAMESPACE == "tfpvae.beam"
    assert all(hasattr(tfpvae_beam, name) for name in tfpvae_beam.__all__)


@pytest.fixture
def user_run(tmp_path):
    """A run folder of a model whose network and prior are registered by tests/example_networks.py."""
    from tfpvae import registry

    example = Path(__file__).resolve().parent / "example_networks.py"
    registry.import_modules([str(example)])
    x_train, _ = load_split("digits", "train")
    model = tfpvae.VAE(
        input_shape=(8, 8, 1), latent_dim=2, architecture="small_resnet", prior="logistic", options={"width": 4}, seed=0
    )
    model.fit(x_train[:200], epochs=1, batch_size=50, verbose=0)
    model.save(tmp_path / "user_run")
    yield tmp_path / "user_run", example
    registry.networks.unregister("small_resnet")
    registry.priors.unregister("logistic")


@pytest.mark.slow  # two Beam worker processes, each importing the user's module
def test_workers_import_the_module_of_a_user_network(user_run, inputs, tmp_path, capsys):
    run_dir, example = user_run
    flags = ["--model", str(run_dir), "--input", str(inputs[0]), "--num-samples", "8", "--import", str(example)]
    reference = tmp_path / "reference.csv"
    assert tfpvae_main(["score", *flags, "--out", str(reference), "--skip-bad", "--quiet"]) == 0
    prefix = tmp_path / "beam" / "scores"
    prefix.parent.mkdir()
    beam_flags = ["--direct_num_workers", "2", "--direct_running_mode", "multi_processing"]
    out = subprocess.run(
        [sys.executable, "-m", "tfpvae.beam", *flags, "--output", str(prefix), *beam_flags],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    ref_rows = list(csv.reader(reference.open(newline="")))
    assert sorted(read_shards(f"{prefix}-[0-9]*-of-*.csv", ",".join(ref_rows[0]))) == sorted(ref_rows[1:])


def test_a_user_network_without_its_import_is_named_before_any_worker_starts(user_run, inputs, tmp_path, capsys):
    from tfpvae import registry

    run_dir, _ = user_run
    registry.networks.unregister("small_resnet")
    try:
        flags = ["--model", str(run_dir), "--input", str(inputs[0]), "--output", str(tmp_path / "s")]
        assert run(flags) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("tfpvae.beam: error: `--model` ") and "\n" not in err
        assert "`architecture` 'small_resnet' is not a registered network" in err
        assert run([*flags, "--import", "no_such_module_here"]) == 2
        assert "`--import no_such_module_here`: no module named 'no_such_module_here'" in capsys.readouterr().err
    finally:
        registry.import_modules([str(Path(__file__).resolve().parent / "example_networks.py")])


def test_files_of_a_remote_folder_are_spelt_as_list_files_joins_them():
    """list_files joins a remote folder as written and a name ("gs://b/png//" + "a.png");
    Beam's matcher gives "gs://b/png/a.png", which must be renamed to that spelling."""
    from types import SimpleNamespace

    from tfpvae.beam_transforms import _Rename

    rename = _Rename("folder", "gs://b/png//", "gs://b/png/*")
    assert list(rename(SimpleNamespace(path="gs://b/png/a.png"))) == [tf.io.gfile.join("gs://b/png//", "a.png")]
    assert list(rename(SimpleNamespace(path="gs://b/png/notes.txt"))) == []
