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


def test_losses_kept_restores_the_per_call_losses_of_every_sublayer():
    import numpy as np

    from tfpvae._keras import losses_kept, tf, tfk

    inner = tfk.layers.Dense(2, activity_regularizer="l1", kernel_initializer="ones")
    net = tfk.Sequential([inner])
    x, u = tf.ones((1, 3)), 2 * tf.ones((1, 3))

    def activity():
        return [float(t) for t in inner.losses]

    net(x)  # outermost: its losses are x's alone (L1(0.01) of [3, 3] = 0.06)
    np.testing.assert_allclose(activity(), [0.06], rtol=1e-6)
    with losses_kept(net):
        net(u)  # outermost again: Keras clears x's loss and adds u's
    np.testing.assert_allclose(activity(), [0.06], rtol=1e-6)  # x's is back
    net(u)
    np.testing.assert_allclose(activity(), [0.12], rtol=1e-6)  # unguarded: replaced

    class Outer(tfk.layers.Layer):
        """Calls `net` on its input, then on u: inside a call, the losses of both add up."""

        def __init__(self, keep):
            super().__init__()
            self.net, self.keep = net, keep

        def call(self, inputs):
            self.net(inputs)
            if self.keep:
                with losses_kept(self.net):
                    self.net(u)
            else:
                self.net(u)
            return inputs

    Outer(keep=False)(x)
    np.testing.assert_allclose(activity(), [0.06, 0.12], rtol=1e-6)
    Outer(keep=True)(x)
    np.testing.assert_allclose(activity(), [0.06], rtol=1e-6)  # u's pass leaves no trace
