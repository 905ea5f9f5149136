import os
import subprocess
import sys


def test_refuses_to_load_when_legacy_keras_is_turned_off():
    # With TF_USE_LEGACY_KERAS=0, TFP's layers fail inside the first training step with a shape
    # error that does not name the cause: tfpvae refuses at import and says why.
    env = {**os.environ, "TF_USE_LEGACY_KERAS": "0"}
    out = subprocess.run([sys.executable, "-c", "import tfpvae._keras"], env=env, capture_output=True, text=True)
    assert out.returncode != 0
    assert "ImportError: tfpvae needs TF_USE_LEGACY_KERAS=1" in out.stderr
    assert "TF_USE_LEGACY_KERAS='0'" in out.stderr


def test_sets_legacy_keras_for_the_process_when_unset():
    env = {k: v for k, v in os.environ.items() if k != "TF_USE_LEGACY_KERAS"}
    code = "import os, tfpvae._keras as k; print(os.environ['TF_USE_LEGACY_KERAS'], k.tfk.__name__)"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == ["1", "tf_keras"]
