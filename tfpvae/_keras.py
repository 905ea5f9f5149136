"""The one place that imports tf_keras and TensorFlow Probability.

`tfp.layers` only works with Keras 2 (`tf_keras`); importing `tf.keras` or Keras 3
anywhere would mix two Keras runtimes.  Every other module imports `tfk`, `tfkl`,
`tfpl`, `tfd`, `tfb` from here so the choice is made once.

Importing this module sets the environment variable `TF_USE_LEGACY_KERAS=1` for the whole
process (unless it is already set), before TensorFlow loads: TFP's distribution layers
need it, and with it `tf.keras` is Keras 2 for every library in the process. Set to
anything else, tfpvae refuses to load rather than fail later inside a training step.
The installation page of the docs says the same for users.
"""

from __future__ import annotations

import contextlib
import os

# Make `tf.keras` resolve to Keras 2 as well: TFP's layers reach Keras through it.
os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
if os.environ["TF_USE_LEGACY_KERAS"].strip().lower() not in ("1", "true"):
    # Measured: with TF_USE_LEGACY_KERAS=0 a VAE builds but its first training step fails
    # deep inside TFP's layers with a shape error that does not name the cause.
    raise ImportError(
        "tfpvae needs TF_USE_LEGACY_KERAS=1 (TensorFlow Probability's layers work only with Keras 2); "
        f"this process has TF_USE_LEGACY_KERAS={os.environ['TF_USE_LEGACY_KERAS']!r}. Unset it or set it to 1."
    )


def _import_quietly():
    """Imports TensorFlow with its C++ start-up log lines (oneDNN, CUDA probing) silenced.

    TensorFlow 2.21 writes them before absl logging is initialised, so
    TF_CPP_MIN_LOG_LEVEL cannot stop them; we point file descriptor 2 at /dev/null for
    the import only. Set TFPVAE_VERBOSE_IMPORT=1 to see them.
    """
    import importlib

    names = ("tensorflow", "tensorflow_probability", "tf_keras")
    if os.environ.get("TFPVAE_VERBOSE_IMPORT"):
        return [importlib.import_module(n) for n in names]
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 2)
            modules = [importlib.import_module(n) for n in names]
            # Device discovery logs a CUDA probe error on CPU-only machines: do it now, quietly.
            modules[0].config.list_physical_devices()
            return modules
    finally:
        os.dup2(saved, 2)
        os.close(saved)


os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
tf, tfp, tfk = _import_quietly()

tfkl = tfk.layers
tfpl = tfp.layers
tfd = tfp.distributions
tfb = tfp.bijectors


def unwrap(distribution):
    """The plain `tfd.Distribution` inside a Keras layer's tensor-coercible output wrapper
    (a distribution layer returns one that also acts as a tensor); anything else unchanged."""
    return getattr(distribution, "tensor_distribution", distribution)


@contextlib.contextmanager
def losses_kept(layer):
    """Restores the per-call losses of `layer` and its sublayers when the block ends.

    For a pass through a layer that is not part of the loss (the VampPrior's pseudo-images
    through the encoder): without it, that pass's activity losses join the batch's when it
    runs inside another layer's call, and replace them when it is the outermost call (which
    clears them first). In tf_keras these losses live in each layer's thread-local
    `_eager_losses`, eagerly and in a tf.function alike (its `add_loss` and `_clear_losses`);
    weight regularizers are recomputed on every read and need nothing.
    """
    saved = [(sub, list(sub._eager_losses)) for sub in layer._flatten_layers()]
    try:
        yield
    finally:
        for sub, losses in saved:
            sub._thread_local._eager_losses = losses


__all__ = ["tf", "tfp", "tfk", "tfkl", "tfpl", "tfd", "tfb", "losses_kept", "unwrap"]
