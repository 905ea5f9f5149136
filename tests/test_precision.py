"""bfloat16 products against independent computations; scoring and training in bfloat16 against float32."""

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

import tfpvae.likelihood
import tfpvae.precision
from tfpvae._keras import tf, tfk, tfkl
from tfpvae.anomaly import AnomalyDetector
from tfpvae.model import VAE
from tfpvae.precision import BFloat16Product, count_products, low_precision, native_bfloat16, resolve_precision


def _round_bf16(a) -> np.ndarray:
    return tf.cast(tf.cast(a, tf.bfloat16), tf.float64).numpy()


def test_resolve_precision(monkeypatch):
    assert resolve_precision("float32") == "float32"
    assert resolve_precision("bfloat16") == "bfloat16"
    monkeypatch.setattr(tfpvae.precision, "native_bfloat16", lambda: False)
    assert resolve_precision("auto") == "float32"
    monkeypatch.setattr(tfpvae.precision, "native_bfloat16", lambda: True)
    assert resolve_precision("auto") == "bfloat16"
    with pytest.raises(ValueError, match="`precision` must be one of"):
        resolve_precision("float16")


def test_native_bfloat16_reads_the_cpu_flags():
    if tf.config.list_physical_devices("GPU"):
        pytest.skip("a GPU decides")
    with open("/proc/cpuinfo") as f:
        flags = {flag for line in f if line.startswith("flags") for flag in line.split(":")[1].split()}
    assert native_bfloat16() == bool(flags & {"amx_bf16", "avx512_bf16"})


def test_dense_product_is_the_rounded_product_with_float32_bias_and_activation():
    rng = np.random.default_rng(0)
    layer = tfkl.Dense(7, activation="tanh")
    x = rng.normal(size=(5, 11)).astype(np.float32)
    layer(x)
    layer.bias.assign(rng.normal(size=7).astype(np.float32))
    got = BFloat16Product(layer)(x).numpy()
    # Independent: float64 product of the bfloat16-rounded operands, rounded once more (the
    # product's bfloat16 result), then bias and tanh.
    product = _round_bf16(_round_bf16(x) @ _round_bf16(layer.kernel.numpy()))
    expected = np.tanh(product + layer.bias.numpy())
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, expected, atol=2e-2)
    np.testing.assert_allclose(got, layer(x).numpy(), atol=5e-2)  # near the float32 layer


@pytest.mark.parametrize(
    "layer",
    [
        tfkl.Conv2D(4, 3, strides=2, padding="same", activation="relu"),
        tfkl.Conv2DTranspose(4, 3, strides=2, padding="same"),
        tfkl.Conv1D(3, 2, padding="valid"),
    ],
    ids=["conv2d", "conv2d_transpose", "conv1d"],
)
def test_convolution_products_match_the_float32_layer(layer):
    rng = np.random.default_rng(1)
    shape = (2, 9, 3) if isinstance(layer, tfkl.Conv1D) else (2, 7, 7, 3)
    x = rng.uniform(size=shape).astype(np.float32)
    reference = layer(x).numpy()
    got = BFloat16Product(layer)(x).numpy()
    assert got.shape == reference.shape and got.dtype == np.float32
    # bfloat16 keeps 8 significant bits: about 0.4% of each operand, a few % of the sum.
    np.testing.assert_allclose(got, reference, atol=0.03 * np.abs(reference).max() + 1e-3)


def test_a_causal_convolution_stays_float32():
    # Its left padding happens in the layer's call, which the bfloat16 product bypasses.
    inputs = tfk.Input((16, 3))
    network = tfk.Model(inputs, tfkl.Conv1D(4, 3, padding="causal")(inputs))
    copy = low_precision(network)
    assert count_products(copy) == 0
    x = np.random.default_rng(0).uniform(size=(2, 16, 3)).astype(np.float32)
    np.testing.assert_array_equal(copy(x).numpy(), network(x).numpy())


def test_a_layer_with_an_activity_regularizer_stays_float32():
    # The regularizer's loss is added by the layer's own __call__, which the product bypasses.
    inputs = tfk.Input((5,))
    network = tfk.Model(inputs, tfkl.Dense(3, activity_regularizer=tfk.regularizers.L2(1.0))(inputs))
    copy = low_precision(network)
    assert count_products(copy) == 0
    x = np.ones((2, 5), np.float32)
    copy(x)
    assert len(copy.losses) == 1 and float(copy.losses[0]) > 0


def test_low_precision_copy_shares_the_weights_and_follows_training():
    model = VAE(input_shape=(8, 8, 1), latent_dim=2, architecture="conv", filters=4, hidden_units=16, seed=0)
    decoder = low_precision(model.decoder)
    encoder = low_precision(model.encoder, keep=tfpvae.precision.HEAD_LAYERS)
    # conv decoder: dense, dense, 2 transposed convolutions, the output convolution.
    assert count_products(decoder) == 5
    assert count_products(encoder) == 3  # 2 convolutions and the dense layer; the head is kept
    assert not decoder.trainable_weights or all(
        any(v is w for w in model.decoder.trainable_weights) for v in decoder.trainable_weights
    )
    z = np.random.default_rng(2).normal(size=(4, 2)).astype(np.float32)
    before = decoder(z).mean().numpy()
    rng = np.random.default_rng(3)
    for variable in model.decoder.trainable_weights:
        variable.assign(rng.normal(0.0, 0.3, variable.shape))
    after = decoder(z).mean().numpy()
    np.testing.assert_allclose(after, model.decoder(z).mean().numpy(), atol=0.03)
    assert np.abs(after - before).max() > 0.1


def test_a_subclassed_network_is_left_as_it_is():
    class Net(tfk.Model):
        def __init__(self):
            super().__init__()
            self.dense = tfkl.Dense(3)

        def call(self, x):
            return self.dense(x)

    net = Net()
    net(np.zeros((1, 2), np.float32))
    assert low_precision(net) is net


def test_bfloat16_scores_are_within_the_goals(trained_digits, digits):
    (_, _), (x_test, _) = digits
    x = x_test[:200]
    f32 = trained_digits.estimator("float32").log_prob(x, 64, seed=0)
    estimator = trained_digits.estimator("bfloat16")
    assert estimator.precision == "bfloat16" and trained_digits.estimator("bfloat16") is estimator
    bf16 = trained_digits.log_prob(x, 64, seed=0, precision="bfloat16")
    delta = np.abs(bf16 - f32)
    assert abs(bf16.mean() - f32.mean()) < 0.1
    assert np.quantile(delta, 0.99) <= 0.5
    assert delta.max() > 0  # the products did run in bfloat16


def test_auto_falls_back_to_float32_where_the_model_disagrees(trained_digits, monkeypatch):
    monkeypatch.setattr(tfpvae.precision, "native_bfloat16", lambda: True)
    build = tfpvae.likelihood.LikelihoodEstimator.from_model
    assert build(trained_digits, precision="auto").precision == "bfloat16"
    monkeypatch.setattr(tfpvae.likelihood, "AUTO_TOLERANCE_NATS", 0.0)
    assert build(trained_digits, precision="auto").precision == "float32"
    monkeypatch.setattr(tfpvae.precision, "native_bfloat16", lambda: False)
    assert build(trained_digits, precision="auto").precision == "float32"


def test_detector_in_bfloat16_ranks_as_in_float32(trained_digits, digits):
    (_, _), (x_test, _) = digits
    normal = x_test[:120]
    anomalous = 1.0 - x_test[120:180]  # inverted digits
    labels = np.r_[np.ones(60), np.zeros(60)]
    aurocs = {}
    for precision in ("float32", "bfloat16"):
        detector = AnomalyDetector(trained_digits, num_samples=16, precision=precision).fit(normal[:60])
        assert detector.estimator_.precision == precision
        aurocs[precision] = roc_auc_score(labels, detector.score_samples(np.r_[normal[60:], anomalous]))
    assert abs(aurocs["bfloat16"] - aurocs["float32"]) <= 0.01
    with pytest.raises(ValueError, match="`precision` must be one of"):
        AnomalyDetector(trained_digits, precision="half").fit(normal[:60])


def test_training_in_bfloat16_learns_and_counts_the_kl_once(digits):
    (x, _), _ = digits
    model = VAE(input_shape=(8, 8, 1), latent_dim=2, binarize="none", seed=0)
    model.compile(precision="bfloat16")
    assert model.training_precision == "bfloat16"
    first = model.evaluate(x[:256], verbose=0)
    history = model.fit(x[:512], epochs=3, batch_size=64, verbose=0).history
    assert history["loss"][-1] < first[0] - 1.0
    # Gradients reach the float32 weights through the rounding.
    assert all(v.dtype == tf.float32 for v in model.trainable_weights)
    # The KL in the loss is the regularizer's, counted once: loss = nll + kl (beta 1).
    loss, nll, kl = (float(v) for v in model._loss_terms(tf.constant(x[:64]), training=False))
    np.testing.assert_allclose(loss, nll + kl, rtol=1e-5)
    exact = float(tf.reduce_mean(model.encoder(x[:64]).kl_divergence(model.prior)))
    np.testing.assert_allclose(kl, exact, rtol=2e-2, atol=2e-2)
    # The saved weights are the model's own float32 variables, no copies.
    assert len(model.get_weights()) == len(VAE(input_shape=(8, 8, 1), latent_dim=2).get_weights())
