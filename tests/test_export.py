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
from tfpvae.export import SERVED_SCORES, ServingModule

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
    with pytest.raises(tf.errors.InvalidArgumentError, match="`seed` must be >= 0"):
        module.sample(tf.constant(2), tf.constant(-1))
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


SERVED_VS_LIBRARY = (  # the served name, the library's name, the served sign
    ("log_prob", "log_prob", 1),
    ("log_prob_stderr", "log_prob_stderr", 1),
    ("elbo", "elbo", 1),
    ("rate", "rate", -1),
    ("distortion", "distortion", -1),
    ("complexity", "complexity", 1),
)


def _library_scores(model, x, ids, seed, num_samples):
    """The served `score` outputs of `x`, computed in-process by the model's own estimator."""
    names = tuple(library for _, library, _ in SERVED_VS_LIBRARY)
    out = model.estimator().scores(x, names, num_samples, ids=list(ids), seed=seed)
    return {served: sign * out[library] for served, library, sign in SERVED_VS_LIBRARY}


def test_a_request_larger_than_the_chunk_equals_small_requests_and_the_library(trained_digits, digits):
    """23 images in chunks of 4: the same rows as requests of 1, 4, 7 and 11 images and as in-process scores."""
    model = trained_digits
    module = ServingModule(model, num_samples=8, max_batch_elements=32)
    assert module.chunk_images == 4  # 32 codes per decoder batch / 8 samples per image
    x = digits[1][0][:23]
    ids = [f"img-{i}" for i in np.random.default_rng(1).permutation(100)[:23]]
    seed = tf.constant(7)
    whole = {k: v.numpy() for k, v in module.score(tf.constant(x), tf.constant(ids), seed).items()}
    assert sorted(whole) == sorted(SERVED_SCORES) and all(v.shape == (23,) for v in whole.values())
    bounds = [0, 1, 5, 12, 23]
    parts = [module.score(tf.constant(x[a:b]), tf.constant(ids[a:b]), seed) for a, b in zip(bounds, bounds[1:])]
    library = _library_scores(model, x, ids, 7, 8)
    for name in SERVED_SCORES:
        pieces = np.concatenate([part[name].numpy() for part in parts])
        np.testing.assert_allclose(whole[name], pieces, atol=1e-5, err_msg=name)
        np.testing.assert_allclose(whole[name], library[name], atol=1e-4, err_msg=name)
    assert np.ptp(whole["log_prob"]) > 1.0  # different images: the comparison has teeth
    # The log_prob signature, with row-index ids: the library's default ids (elbo: the test below).
    np.testing.assert_allclose(
        module.log_prob(tf.constant(x), seed)["log_prob"], model.log_prob(x, 8, seed=7), atol=1e-4
    )


def test_sample_decodes_in_chunks_the_images_of_one_draw(trained_digits):
    """`sample` with 4 codes per decoder batch: the images of one decoder call on the same prior draw."""
    module = ServingModule(trained_digits, num_samples=1, max_batch_elements=4)
    served = module.sample(tf.constant(10), tf.constant(5))["images"].numpy()
    z = trained_digits.prior.sample(10, seed=tf.constant([5, 1]))
    np.testing.assert_allclose(served, trained_digits.decoder(z, training=False).mean().numpy(), atol=1e-6)
    assert np.ptp(served.reshape(10, -1).mean(axis=1)) > 0  # ten different images


def _recording_decoder(module: ServingModule) -> tf.Variable:
    """Makes `module`'s signatures record their largest decoder batch (codes) in the returned variable."""
    encoder, decoder, prior = module._networks()
    largest = tf.Variable(0)

    def recording(z, training):
        largest.assign(tf.maximum(largest, tf.shape(z)[0]))
        return decoder(z, training=training)

    module._networks = lambda: (encoder, recording, prior)
    return largest


def test_peak_memory_is_bounded_by_the_chunk_whatever_the_request_size(trained_digits, digits):
    """The largest intermediate, the decoder batch, is one chunk's codes for 1x and 8x the chunk's images.

    Unchunked, 8x the images would decode 8x the codes at once (256 here, not 32); the
    chunks run one at a time (parallel_iterations=1), else TensorFlow could overlap them.
    """
    module = ServingModule(trained_digits, num_samples=8, max_batch_elements=32)
    largest = _recording_decoder(module)
    x = digits[1][0]
    for n in (4, 32, 61):  # one chunk, 8 chunks, 15 chunks and a short one
        largest.assign(0)
        out = module.score(tf.constant(x[:n]), tf.constant([str(i) for i in range(n)]), tf.constant(0))
        assert out["log_prob"].shape == (n,)
        assert int(largest.numpy()) == 32, n  # 4 images x 8 samples, the budget, never n x 8
        for signature in (module.log_prob, module.elbo):
            largest.assign(0)
            served = signature(tf.constant(x[:n]), tf.constant(0))
            assert int(largest.numpy()) == 32, (signature, n)
    # The last request (elbo, 61 images in 16 decoder batches) gives the rows of the library's one call.
    np.testing.assert_allclose(served["elbo"], trained_digits.elbo(x[:61], 8, seed=0), atol=1e-4)
    for n, expected in ((3, 3), (32, 32), (100, 32)):  # sample: at most the budget's 32 codes at a time
        largest.assign(0)
        assert module.sample(tf.constant(n), tf.constant(0))["images"].shape == (n, 8, 8, 1)
        assert int(largest.numpy()) == expected, n
    for signature in (module.score, module.log_prob, module.elbo, module.sample):
        graph = signature.get_concrete_function().graph
        loops = [op for op in graph.get_operations() if op.type in ("While", "StatelessWhile")]
        assert [op.get_attr("parallel_iterations") for op in loops] == [1], signature


@pytest.mark.slow  # 1,000 requests and their in-process references: 20 to 30 s on 2 cores
def test_load_1000_mixed_requests_from_4_threads_every_answer_checked(trained_digits, digits, tmp_path, monkeypatch):
    """A loaded SavedModel under load: 1,000 `score` requests of 1..64 images, random ids and seeds, 4 threads.

    Every row of every answer equals the in-process score of the same image, id and seed.
    The export's budget is cut to 128 codes (16 images per chunk at k=8) so that requests
    span up to four chunks.
    """
    import concurrent.futures

    import tfpvae.export

    monkeypatch.setattr(tfpvae.export, "default_batch_elements", lambda model: 128)
    k = 8
    assert ServingModule(trained_digits, num_samples=k).chunk_images == 16
    tfpvae.export.export(trained_digits, tmp_path / "served", num_samples=k)
    served = tf.saved_model.load(str(tmp_path / "served"))  # kept: its signatures hold its variables
    score = served.signatures["score"]
    rng = np.random.default_rng(0)
    pool = np.concatenate([digits[0][0], digits[1][0]])
    seeds = rng.integers(0, 2**31 - 1, size=4)
    requests = []
    for r in range(1000):
        n = int(rng.integers(1, 65))
        rows = rng.integers(0, len(pool), size=n)
        ids = [f"r{r}-{i}-{rng.integers(10**6)}" for i in range(n)]
        requests.append((rows, ids, int(rng.choice(seeds))))

    def send(request):
        rows, ids, seed = request
        out = score(images=tf.constant(pool[rows]), ids=tf.constant(ids), seed=tf.constant(seed, tf.int32))
        return {name: value.numpy() for name, value in out.items()}

    with concurrent.futures.ThreadPoolExecutor(4) as executor:
        answers = list(executor.map(send, requests))
    assert len(answers) == 1000 and all(sorted(a) == sorted(SERVED_SCORES) for a in answers)
    # The reference: one in-process call per seed over the rows of all its requests.
    for seed in seeds:
        mine = [i for i, (_, _, s) in enumerate(requests) if s == seed]
        rows = np.concatenate([requests[i][0] for i in mine])
        ids = [id_ for i in mine for id_ in requests[i][1]]
        library = _library_scores(trained_digits, pool[rows], ids, int(seed), k)
        sizes = np.array([len(requests[i][0]) for i in mine])
        for i, stop, size in zip(mine, np.cumsum(sizes), sizes):
            start = stop - size
            for name in SERVED_SCORES:
                np.testing.assert_allclose(
                    answers[i][name], library[name][start:stop], atol=1e-4, err_msg=f"request {i}, {name}"
                )


def test_a_failed_export_leaves_no_new_folder_and_an_old_export_whole(tmp_path, trained_digits, monkeypatch):
    import errno
    import os

    import tfpvae.export as export_module
    from tfpvae._io import StorageError

    def no_space(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    with monkeypatch.context() as patch:
        patch.setattr(export_module.tf.saved_model, "save", no_space)
        with pytest.raises(StorageError, match="No space left"):
            export_module.export(trained_digits, tmp_path / "new", num_samples=2)
    assert not (tmp_path / "new").exists()  # the folder the call made went with it

    old = export_module.export(trained_digits, tmp_path / "s", num_samples=2)
    before = {p.relative_to(old): p.read_bytes() for p in old.rglob("*") if p.is_file()}
    real = os.replace

    def refuse_new_variables(src, dst):
        if str(dst) == str(old / "variables") and ".partial" in str(src) and "old." not in str(src):
            raise OSError(errno.EIO, "Input/output error")
        return real(src, dst)

    with monkeypatch.context() as patch:
        patch.setattr(export_module.os, "replace", refuse_new_variables)
        with pytest.raises(StorageError, match="move the SavedModel into"):
            export_module.export(trained_digits, old, num_samples=3, overwrite=True)
    after = {p.relative_to(old): p.read_bytes() for p in old.rglob("*") if p.is_file()}
    assert after == before  # every old part back in place, nothing new beside it
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".partial")] == []
    served = tf.saved_model.load(str(old))
    assert served.signatures["log_prob"](images=tf.zeros([1, 8, 8, 1]), seed=tf.constant(0))["log_prob"].shape == (1,)


def test_an_old_export_part_that_cannot_go_back_is_kept_and_named(tmp_path, trained_digits, monkeypatch):
    import errno
    import os

    import tfpvae.export as export_module
    from tfpvae._io import StorageError

    old = export_module.export(trained_digits, tmp_path / "s", num_samples=2)
    old_variables = sorted(p.name for p in (old / "variables").iterdir())
    real = os.replace

    def refuse_variables_both_ways(src, dst):
        to_target = str(dst) == str(old / "variables")
        if to_target and ".partial" in str(src):  # neither the new variables in, nor the old back
            raise OSError(errno.EIO, "Input/output error")
        return real(src, dst)

    monkeypatch.setattr(export_module.os, "replace", refuse_variables_both_ways)
    with pytest.raises(StorageError, match=r"could not go back and are in .*\.old-export as old\.\*"):
        export_module.export(trained_digits, old, num_samples=3, overwrite=True)
    [kept] = [p for p in tmp_path.iterdir() if p.name.endswith(".old-export")]
    assert sorted(p.name for p in (kept / "old.variables").iterdir()) == old_variables


def test_an_export_into_a_folder_another_process_writes_is_refused_and_changes_nothing(
    tmp_path, trained_digits, hold_folder, monkeypatch
):
    import tfpvae.export as export_module
    from tfpvae.write_guard import LOCK_FILE, OWNER_FILE, FolderInUseError

    def contents(folder):  # the SavedModel's files; the lock's own files come and go
        files = (p for p in folder.rglob("*") if p.is_file() and p.name not in (LOCK_FILE, OWNER_FILE))
        return {p.relative_to(folder): p.read_bytes() for p in files}

    old = export_module.export(trained_digits, tmp_path / "s", num_samples=2)
    before = contents(old)
    holder = hold_folder(old)
    with pytest.raises(FolderInUseError, match=f"in use by process {holder.pid} on "):
        export_module.export(trained_digits, old, num_samples=3, overwrite=True)
    assert contents(old) == before
    assert [p.name for p in tmp_path.iterdir()] == ["s"]  # no staging folder was made

    # The race: the folder did not exist when this export began, and another process made
    # and claimed it before this one took the lock. Refused, and the other's folder stays.
    real = export_module._export_into

    def another_process_claims_first(path, *args, **kwargs):
        hold_folder(path)
        return real(path, *args, **kwargs)

    monkeypatch.setattr(export_module, "_export_into", another_process_claims_first)
    with pytest.raises(FolderInUseError):
        export_module.export(trained_digits, tmp_path / "new", num_samples=2)
    assert (tmp_path / "new" / OWNER_FILE).exists()  # the other process's folder, left as it was
