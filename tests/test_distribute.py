"""Mirrored and multi-worker training agree with single-device training.

Both run in subprocesses: splitting the CPU into logical devices, and TF_CONFIG, must be set
before TensorFlow initialises, which this test process has already done.
"""

import json
import os
import socket
import subprocess
import sys
import textwrap

import pytest

# The slow tier: the tests start TensorFlow processes of their own (up to about a minute each on
# 2 cores); the quick TF_CONFIG check at the end goes along with its module.
pytestmark = pytest.mark.slow

MIRRORED = textwrap.dedent(
    """
    import json, numpy as np, tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    import tfpvae
    from tfpvae._keras import tfk
    from tfpvae.distribute import make_strategy
    (x, _), _ = tfpvae.datasets.load("digits")
    x = np.tile(x[:64], (16, 1, 1, 1))  # 1024 images: many z draws per image
    strategy = make_strategy("mirrored", ["/cpu:0", "/cpu:1"])
    def build():
        m = tfpvae.VAE(input_shape=(8, 8, 1), latent_dim=2, seed=0, binarize="none", train_samples=TRAIN_SAMPLES)
        m.compile(tfk.optimizers.SGD(0.01))
        return m
    with strategy.scope():
        mirrored = build()
    single = build()
    out = {"replicas": strategy.num_replicas_in_sync}
    for name, m in (("mirrored", mirrored), ("single", single)):
        out[name] = m.evaluate(x, batch_size=1024, return_dict=True, verbose=0)
        w0 = m.get_weights()
        m.fit(x, batch_size=1024, epochs=1, shuffle=False, verbose=0)
        out[name + "_update"] = float(sum(np.abs(a - b).sum() for a, b in zip(m.get_weights(), w0)))
        out[name + "_num_weights"] = len(m.weights)
    print(json.dumps(out))
    """
)


def _env():
    env = dict(os.environ)
    env.pop("TF_CONFIG", None)
    return env


@pytest.mark.parametrize("train_samples", [1, 3])
def test_mirrored_matches_single_device(train_samples):
    script = MIRRORED.replace("TRAIN_SAMPLES", str(train_samples))
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300, env=_env())
    assert proc.returncode == 0, proc.stderr[-2000:]
    r = json.loads(proc.stdout.strip().splitlines()[-1])
    assert r["replicas"] == 2
    m, s = r["mirrored"], r["single"]
    assert m["kl"] == pytest.approx(s["kl"], rel=1e-5)  # exact KL: only float rounding differs
    assert m["nll"] == pytest.approx(s["nll"], abs=0.05)  # Monte Carlo over 1024 draws
    if train_samples == 1:
        assert m["loss"] == pytest.approx(m["nll"] + m["kl"], rel=1e-6)
    else:  # the IWAE bound: the same on one device or two, up to the Monte Carlo error of each
        # (unseeded draws: each side moves by about 0.015 between runs, their difference by
        # 0.03; a replica-averaging bug would move it by nats)
        assert m["loss"] == pytest.approx(s["loss"], abs=0.12)
    # One SGD step on the same global batch: the same update, not one per replica (2x). The
    # replicas draw other z than the single device, which moves the update's size by up to
    # ~6% (seen over repeated runs), so the bound sits between that noise and the 2x bug.
    assert r["mirrored_update"] == pytest.approx(r["single_update"], rel=0.25)
    assert r["mirrored_num_weights"] == r["single_num_weights"]


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _train_two_workers(tmp_path, data_flags: str):
    """Runs `tfpvae train --strategy multiworker DATA_FLAGS ...` as two local workers; returns their stdouts."""
    ports = [_free_port(), _free_port()]
    cluster = {"worker": [f"127.0.0.1:{p}" for p in ports]}
    procs = []
    for i in range(2):
        env = _env()
        env["TF_CONFIG"] = json.dumps({"cluster": cluster, "task": {"type": "worker", "index": i}})
        out = tmp_path / ("run" if i == 0 else "run_worker1")
        command = f"train --strategy multiworker {data_flags} --epochs 2 --batch-size 64 --latent-dim 2 --seed 0"
        cmd = [sys.executable, "-m", "tfpvae", *f"{command} --no-progress --score-limit 20 --out {out}".split()]
        procs.append(subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env))
    outputs = []
    try:
        for p in procs:
            out, err = p.communicate(timeout=240)
            assert p.returncode == 0, err[-2000:]
            outputs.append(out)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    return outputs


def _write_tfrecord_shards(x, y, folder, shards):
    import io

    import numpy as np
    from PIL import Image

    from tfpvae._keras import tf

    folder.mkdir()
    for s in range(shards):
        with tf.io.TFRecordWriter(str(folder / f"part-{s:03d}.tfrecord")) as writer:
            for i in range(s, len(x), shards):
                png = io.BytesIO()
                Image.fromarray(np.round(x[i, ..., 0] * 255).astype(np.uint8)).save(png, "PNG")
                feature = {
                    "image": tf.train.Feature(bytes_list=tf.train.BytesList(value=[png.getvalue()])),
                    "label": tf.train.Feature(int64_list=tf.train.Int64List(value=[int(y[i])])),
                }
                writer.write(tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString())


def test_two_workers_on_localhost_train_from_tfrecord_shards(tmp_path):
    """Each worker streams its share of the files; both take the same number of steps."""
    import tfpvae

    (x, y), (xt, yt) = tfpvae.datasets.load("digits")
    _write_tfrecord_shards(x, y, tmp_path / "train", 4)
    _write_tfrecord_shards(xt[:100], yt[:100], tmp_path / "valid", 1)
    flags = f"--input {tmp_path / 'train' / '*.tfrecord'} --validation-input {tmp_path / 'valid'}"
    outputs = _train_two_workers(tmp_path, flags)
    chief = json.loads(outputs[0].strip().splitlines()[-1])
    assert chief["epochs"] == 2 and not (tmp_path / "run_worker1").exists()
    # Files 0 and 2 (720 images) and 1 and 3 (718): min 718 // 32 per worker = 22 steps an
    # epoch; one worker reading everything would take 1438 // 64 = 23.
    assert "22/22" in outputs[0] and "22/22" in outputs[1] and "23/23" not in outputs[0]
    model = tfpvae.load(tmp_path / "run")
    assert len(model.training_history["loss"]) == 2
    assert model.training_history["loss"][1] < model.training_history["loss"][0]
    assert json.loads((tmp_path / "run" / "evaluation.json").read_text())["num_images"] == 20


def test_two_workers_on_localhost_train_the_same_model(tmp_path):
    outputs = _train_two_workers(tmp_path, "--dataset digits --limit 256")
    chief = json.loads(outputs[0].strip().splitlines()[-1])
    assert chief["epochs"] == 2 and '"run"' not in outputs[1]  # only the chief reports and writes
    # Worker 1 was told another folder: it must write nothing at all (on a shared disk it
    # would race the chief on the same files).
    assert not (tmp_path / "run_worker1").exists()
    import tfpvae

    model = tfpvae.load(tmp_path / "run")
    assert len(model.training_history["loss"]) == 2


def test_multiworker_needs_tf_config(monkeypatch):
    from tfpvae.distribute import make_strategy

    monkeypatch.delenv("TF_CONFIG", raising=False)
    with pytest.raises(ValueError, match="TF_CONFIG"):
        make_strategy("multiworker")
    with pytest.raises(ValueError, match="`strategy` must be one of"):
        make_strategy("tpu")
