"""The SavedModel export loads with plain TensorFlow in a fresh process and gives the same values."""

import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import tfpvae
from tfpvae._keras import tf
from tfpvae.cli import main
from tfpvae.export import ServingModule

FRESH = textwrap.dedent(
    """
    import json, sys, numpy as np, tensorflow as tf
    served = tf.saved_model.load(sys.argv[1])
    x, sig = tf.constant(np.load(sys.argv[2])), served.signatures
    out = {
        "log_prob": sig["log_prob"](images=x, seed=tf.constant(3))["log_prob"].numpy().tolist(),
        "elbo": sig["elbo"](images=x, seed=tf.constant(3))["elbo"].numpy().tolist(),
        "sample": sig["sample"](num_samples=tf.constant(4), seed=tf.constant(5))["images"].numpy().tolist(),
        "tfpvae_imported": "tfpvae" in sys.modules,
    }
    print(json.dumps(out))
    """
)


@pytest.fixture(scope="module")
def trained(digits):
    """A model with a mixture prior (so a Monte Carlo KL), for the tests that compare served values."""
    (x, _), (xt, _) = digits
    model = tfpvae.VAE(input_shape=(8, 8, 1), latent_dim=3, prior="mixture", num_components=3, seed=0)
    model.compile()
    model.fit(x, epochs=3, batch_size=32, verbose=0)
    return model, xt[:20]


@pytest.mark.slow  # an export and a fresh TensorFlow process: about 35 s on 2 cores
def test_export_round_trip_in_a_fresh_process(trained, tmp_path):
    model, x = trained
    run = tmp_path / "run"
    model.save(run)
    assert main(f"export --model {run} --out {tmp_path / 'served'} --num-samples 256".split()) == 0
    np.save(tmp_path / "x.npy", x)
    proc = subprocess.run(
        [sys.executable, "-c", FRESH, str(tmp_path / "served"), str(tmp_path / "x.npy")],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    served = json.loads(proc.stdout.strip().splitlines()[-1])
    assert not served["tfpvae_imported"]

    module = ServingModule(tfpvae.load(run), num_samples=256)
    seed = tf.constant(3)
    np.testing.assert_allclose(served["log_prob"], module.log_prob(x, seed)["log_prob"].numpy(), rtol=1e-5)
    np.testing.assert_allclose(served["elbo"], module.elbo(x, seed)["elbo"].numpy(), rtol=1e-5)
    np.testing.assert_allclose(
        served["sample"], module.sample(tf.constant(4), tf.constant(5))["images"].numpy(), rtol=1e-5
    )
    # The library's own estimator with the same ids (row indices) and seed: the same draws.
    np.testing.assert_allclose(served["log_prob"], model.log_prob(x, 256, seed=3), atol=1e-4)
    np.testing.assert_allclose(served["elbo"], model.elbo(x, 256, seed=3), atol=1e-4)
    assert np.all(np.array(served["log_prob"]) >= np.array(served["elbo"]) - 1e-4)
    images = np.array(served["sample"])
    assert images.shape == (4, 8, 8, 1) and images.min() >= 0 and images.max() <= 1


SCORE = textwrap.dedent(
    """
    import json, sys, numpy as np, tensorflow as tf
    served = tf.saved_model.load(sys.argv[1])
    x = tf.constant(np.load(sys.argv[2]))
    ids = tf.constant([str(i) for i in range(len(x))])
    out = served.signatures["score"](images=x, ids=ids, seed=tf.constant(0))
    print(json.dumps({k: v.numpy().tolist() for k, v in out.items()}))
    """
)


@pytest.mark.slow  # an export, a fresh TensorFlow process and a `score` run: about 30 s
def test_served_scores_equal_the_score_command(trained, tmp_path, digits):
    """The served `score` signature and `tfpvae score` give the same rows for the same ids and seed."""
    import csv

    model, _ = trained
    run = tmp_path / "run"
    model.save(run)
    x = digits[1][0][:200]
    flags = "--num-samples 32 --binarize-seed 5"
    assert main(f"export --model {run} --out {tmp_path / 'served'} {flags}".split()) == 0
    command = f"score --model {run} --dataset digits --limit 200 --quiet {flags}"
    assert main(f"{command} --out {tmp_path / 's.csv'}".split()) == 0
    np.save(tmp_path / "x.npy", x)
    proc = subprocess.run(
        [sys.executable, "-c", SCORE, str(tmp_path / "served"), str(tmp_path / "x.npy")],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    served = json.loads(proc.stdout.strip().splitlines()[-1])
    with open(tmp_path / "s.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["id"] for r in rows] == [str(i) for i in range(200)]
    columns = ["log_prob", "log_prob_stderr", "elbo", "rate", "distortion", "complexity"]
    assert sorted(served) == sorted(columns)
    for column in columns:
        expected = np.array([float(r[column]) for r in rows])
        np.testing.assert_allclose(served[column], expected, atol=1e-3, err_msg=column)
    assert np.ptp(served["log_prob"]) > 1.0  # 200 different images: the comparison has teeth


@pytest.mark.slow  # writing a SavedModel: about 10 s
def test_export_refuses_autoencoders_and_existing_folders(tmp_path, trained_digits):
    with pytest.raises(ValueError, match="autoencoder"):
        ServingModule(tfpvae.VAE(input_shape=(8, 8, 1), latent_dim=2, model_type="ae"))
    from tfpvae.export import export

    export(trained_digits, tmp_path / "s", num_samples=2)
    with pytest.raises(ValueError, match="already holds a SavedModel"):
        export(trained_digits, tmp_path / "s")


@pytest.mark.slow  # over 7 s; the fast tier skips it, CI runs it
def test_served_calls_name_bad_inputs(trained_digits):
    module = ServingModule(trained_digits, num_samples=2)
    with pytest.raises(tf.errors.InvalidArgumentError, match="`num_samples` must be >= 0"):
        module.sample(tf.constant(-1), tf.constant(0))
    assert module.sample(tf.constant(0), tf.constant(0))["images"].shape == (0, 8, 8, 1)
    for signature in (module.log_prob, module.elbo):
        with pytest.raises(tf.errors.InvalidArgumentError, match="`images` must hold at least one image"):
            signature(tf.zeros([0, 8, 8, 1]), tf.constant(0))
    ids = tf.constant(["a", "b"])
    with pytest.raises(tf.errors.InvalidArgumentError, match="`ids` must hold one id per image"):
        module.score(tf.zeros([3, 8, 8, 1]), ids, tf.constant(0))
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"`images` must be float32 in \[0, 1\]"):
        module.score(tf.fill([2, 8, 8, 1], 255.0), ids, tf.constant(0))


def test_serving_module_takes_the_library_chunk_size(trained_digits):
    from tfpvae.likelihood import default_batch_elements
    from tfpvae.scoring import ScoringPlan

    model = trained_digits
    assert ServingModule(model, num_samples=8).plan == ScoringPlan.make(8, default_batch_elements(model))
    assert ServingModule(model, num_samples=8, max_batch_elements=4).plan == ScoringPlan.make(8, 4)


def test_bfloat16_signatures_serve_the_librarys_bfloat16_scores(trained_digits, digits):
    (_, _), (xt, _) = digits
    x = xt[:12]
    module = ServingModule(trained_digits, num_samples=8, precision="bfloat16")
    assert module.precision == "bfloat16"
    served = module.log_prob(tf.constant(x), tf.constant(3))["log_prob"].numpy()
    library = trained_digits.log_prob(x, 8, seed=3, precision="bfloat16")
    np.testing.assert_allclose(served, library, atol=1e-4)
    float32 = trained_digits.log_prob(x, 8, seed=3)
    assert 0 < np.abs(served - float32).max() < 0.5
