"""VAE training loss, KL accounting, prior gradients, architectures and inference methods."""

import numpy as np
import pytest
from references import kl_to_standard_normal

from tfpvae._keras import tf, tfd, tfk
from tfpvae.model import VAE


def _mc_nll(model, x, num_samples, seed=0):
    """Independent estimate of E_q[-log p(x|z)] per image, with its standard error."""
    q = model.encode(x)
    z = q.sample(num_samples, seed=seed)  # (k, n, d)
    flat = tf.reshape(z, (-1, model.config.latent_dim))
    xk = np.broadcast_to(x, (num_samples, *x.shape)).reshape(-1, *x.shape[1:])
    nll = -model.decoder(flat).log_prob(xk).numpy().reshape(num_samples, len(x))
    per_draw = nll.mean(axis=1)  # batch-mean NLL of one z draw per image
    return per_draw.mean(), per_draw.std(ddof=1) / np.sqrt(num_samples)


@pytest.fixture(scope="module")
def digit_batch(digits):
    (x, _), _ = digits
    return x[:32]


def test_kl_regularizer_is_counted_exactly_once(digit_batch):
    x = digit_batch
    model = VAE(input_shape=(8, 8, 1), latent_dim=3, binarize="none", seed=1)
    model(x)
    assert len(model.losses) == 1, "the KL regularizer must add exactly one loss"

    q = model.encode(x)
    kl_ref = kl_to_standard_normal(q.loc.numpy(), q.scale_tril.numpy()).mean()
    np.testing.assert_allclose(model.losses[0].numpy(), kl_ref, rtol=1e-4)

    # Training loss of a step that changes nothing (SGD, lr 0) over many z draws per
    # image against NLL + KL computed here, independently of the model's loss code.
    reps = 200
    tiled = np.tile(x, (reps, 1, 1, 1))
    model.compile(optimizer=tfk.optimizers.SGD(learning_rate=0.0))
    hist = model.fit(tiled, epochs=1, batch_size=len(x), shuffle=False, verbose=0).history
    nll_ref, se = _mc_nll(model, x, num_samples=reps)
    np.testing.assert_allclose(hist["kl"][0], kl_ref, rtol=1e-4)
    assert abs(hist["nll"][0] - nll_ref) < 5 * se + 0.02
    assert abs(hist["loss"][0] - (nll_ref + kl_ref)) < 5 * se + 0.02
    np.testing.assert_allclose(hist["elbo"][0], -hist["loss"][0], rtol=1e-6)  # beta = 1


@pytest.mark.parametrize("train_samples", [1, 4])
def test_a_users_weight_penalties_join_the_loss_not_the_kl(digit_batch, train_samples):
    """L2 penalties in the encoder and decoder of a registered network: once in the loss,
    outside the KL and the ELBO (they were booked as KL from the encoder, and the decoder's
    were dropped)."""
    from tfpvae import registry

    l2 = tfk.regularizers.L2(10.0)

    def penalised(config, role):
        h, w, c = config.input_shape
        if role == "encoder":
            return tfk.Sequential([tfk.layers.Flatten(), tfk.layers.Dense(16, "relu", kernel_regularizer=l2)])
        return tfk.Sequential([tfk.layers.Dense(16, "relu", kernel_regularizer=l2), tfk.layers.Dense(h * w * c)])

    registry.register_network("penalised", replace=True)(penalised)
    try:
        model = VAE(
            input_shape=(8, 8, 1),
            latent_dim=3,
            architecture="penalised",
            beta=0.5,
            binarize="none",
            train_samples=train_samples,
            seed=1,
        )
        model.compile()
        r = model.evaluate(digit_batch, batch_size=32, return_dict=True, verbose=0)
    finally:
        registry.networks.unregister("penalised")
    q = model.encode(digit_batch)
    kl_ref = kl_to_standard_normal(q.loc.numpy(), q.scale_tril.numpy()).mean()
    kernels = [
        layer.kernel
        for network in (model.encoder, model.decoder)
        for layer in network.submodules
        if getattr(layer, "kernel_regularizer", None) is l2
    ]
    assert len(kernels) == 2
    penalty = sum(10.0 * float(tf.reduce_sum(tf.square(k))) for k in kernels)
    assert penalty > 1.0  # large beside the KL: a misbooking shows
    np.testing.assert_allclose(r["kl"], kl_ref, rtol=1e-4)
    np.testing.assert_allclose(r["elbo"], -(r["nll"] + r["kl"]), rtol=1e-5)
    if train_samples == 1:
        np.testing.assert_allclose(r["loss"], r["nll"] + 0.5 * r["kl"] + penalty, rtol=1e-5)
    else:  # the bound is not nll + kl, but the penalty is added to it whole
        assert r["loss"] - penalty < r["nll"] + 0.5 * r["kl"] + 1e-3 and r["loss"] > penalty


@pytest.mark.parametrize("train_samples", [1, 3])
@pytest.mark.parametrize("graph", [False, True], ids=["eager", "tf.function"])
def test_the_vampprior_pass_leaves_the_batchs_activity_losses_alone(digit_batch, train_samples, graph):
    """The VampPrior runs the encoder on its pseudo-images (inside the encoder's call for the
    KL, and on its own for k > 1): the activity losses of that pass were added to the
    batch's (k = 1) or replaced them (k > 1)."""
    from tfpvae import registry

    def active(config, role):
        h, w, c = config.input_shape
        if role == "encoder":
            return tfk.Sequential([tfk.layers.Flatten(), tfk.layers.Dense(16, "relu", activity_regularizer="l1")])
        return tfk.Sequential([tfk.layers.Dense(16, "relu"), tfk.layers.Dense(h * w * c)])

    registry.register_network("active", replace=True)(active)
    try:
        model = VAE(
            input_shape=(8, 8, 1), latent_dim=3, architecture="active", prior="vamp", binarize="none",
            train_samples=train_samples, seed=1, options={"num_components": 4},
        )  # fmt: skip
    finally:
        registry.networks.unregister("active")
    x = tf.constant(digit_batch[:32])

    def penalty_in_loss(x):
        model._loss_terms(x, training=False)  # what the loss adds is read after every pass
        return model._penalty()

    penalty = float((tf.function(penalty_in_loss) if graph else penalty_in_loss)(x))
    body = model.encoder.layers[1]
    expected = 0.01 * float(tf.reduce_sum(tf.abs(body(x)))) / 32  # L1(0.01) of this batch's activations, per image
    assert expected > 0.01
    np.testing.assert_allclose(penalty, expected, rtol=1e-5)


def test_beta_weights_only_the_kl(digit_batch):
    model = VAE(input_shape=(8, 8, 1), latent_dim=3, beta=0.25, binarize="none", seed=1)
    model.compile()
    r = model.evaluate(digit_batch, batch_size=32, return_dict=True, verbose=0)
    np.testing.assert_allclose(r["loss"], r["nll"] + 0.25 * r["kl"], rtol=1e-5)
    np.testing.assert_allclose(r["elbo"], -(r["nll"] + r["kl"]), rtol=1e-5)


@pytest.mark.parametrize("prior", ["mixture", "vamp", "flow"])
def test_mixture_kl_is_monte_carlo_and_counted_once(prior, digit_batch):
    x = digit_batch
    model = VAE(input_shape=(8, 8, 1), latent_dim=2, prior=prior, num_components=3, seed=2)
    q = model.encode(x)
    z = q.sample(4000, seed=5)
    kl_ref = (q.log_prob(z) - model.prior.log_prob(z)).numpy().mean()
    kls = [model(x) is not None and float(model.losses[0]) for _ in range(40)]
    assert len(model.losses) == 1
    assert abs(np.mean(kls) - kl_ref) < 5 * np.std(kls) / np.sqrt(len(kls)) + 0.01


@pytest.mark.slow  # over 7 s; the fast tier skips it, CI runs it
@pytest.mark.parametrize("prior", ["mixture", "vamp", "flow"])
def test_iwae_kl_metric_averages_the_k_draws(prior, digit_batch):
    x = digit_batch
    model = VAE(input_shape=(8, 8, 1), latent_dim=2, prior=prior, num_components=3, train_samples=16, seed=2)
    q = model.encode(x)
    z = q.sample(4000, seed=5)
    kl_ref = (q.log_prob(z) - model.prior.log_prob(z)).numpy().mean()
    kls = _repeat_losses(model, x, reps=40)[:, 2]
    assert abs(kls.mean() - kl_ref) < 5 * kls.std(ddof=1) / np.sqrt(len(kls)) + 0.01
    # A mean over the k = 16 draws of each image, not the regularizer's single draw: a
    # quarter of its spread across repetitions (asserted with room for the estimate's noise).
    single = [model(x) is not None and float(model.losses[0]) for _ in range(40)]
    assert kls.std() < 0.5 * np.std(single), (kls.std(), np.std(single))


@pytest.mark.parametrize("prior", ["learned_normal", "mixture", "vamp", "flow"])
def test_learned_prior_variables_receive_gradients(prior, digit_batch):
    model = VAE(input_shape=(8, 8, 1), latent_dim=2, prior=prior, seed=0)
    prior_vars = model.prior_layer.trainable_weights
    assert prior_vars and all(any(v is w for w in model.trainable_weights) for v in prior_vars)
    before = [v.numpy().copy() for v in prior_vars]
    model.compile()
    model.fit(digit_batch, epochs=1, batch_size=32, verbose=0)
    for b, v in zip(before, prior_vars):
        assert np.abs(v.numpy() - b).max() > 1e-6, f"{v.name} did not change"


@pytest.mark.parametrize("architecture", ["conv", "mlp", "dcgan"])
@pytest.mark.parametrize("shape", [(8, 8, 1), (28, 28, 1), (32, 32, 3), (64, 64, 3)])
def test_architectures_adapt_to_image_shape(architecture, shape):
    model = VAE(input_shape=shape, latent_dim=4, architecture=architecture, seed=0)
    x = np.random.default_rng(0).random((3, *shape)).astype(np.float32)
    q = model.encode(x)
    assert isinstance(q, tfd.MultivariateNormalTriL)
    assert q.batch_shape == (3,) and q.event_shape == (4,)
    px = model.decode(q.mean())
    assert px.event_shape == shape and px.batch_shape == (3,)
    # log p(x|z) of a Bernoulli is a sum of H*W*C log-probabilities, each <= 0.
    lp = px.log_prob(x).numpy()
    assert np.all(lp < 0) and np.all(lp > -np.prod(shape) * 50)


def test_autoencoder_has_point_mass_code_and_no_kl(digit_batch):
    model = VAE(input_shape=(8, 8, 1), latent_dim=2, model_type="ae", seed=0)
    q = model.encode(digit_batch)
    np.testing.assert_array_equal(q.sample().numpy(), q.mean().numpy())
    model.compile()
    r = model.evaluate(digit_batch, return_dict=True, verbose=0)
    assert r["kl"] == 0.0 and r["loss"] == pytest.approx(r["nll"])


def test_sample_and_reconstruct_contracts(digit_batch):
    model = VAE(input_shape=(8, 8, 1), latent_dim=2, seed=0)
    images, z = model.sample(5, seed=3, return_latents=True)
    assert images.shape == (5, 8, 8, 1) and images.dtype == np.float32 and z.shape == (5, 2)
    assert images.min() >= 0 and images.max() <= 1
    np.testing.assert_array_equal(images, model.sample(5, seed=3))
    np.testing.assert_allclose(images, model.decode(z).mean().numpy(), rtol=1e-6)
    rec = model.reconstruct(digit_batch)
    np.testing.assert_allclose(rec, model.decode(model.encode(digit_batch).mean()).mean().numpy(), rtol=1e-6)


def test_uint8_input_is_scaled(digit_batch):
    model = VAE(input_shape=(8, 8, 1), latent_dim=2, seed=0)
    as_uint8 = np.round(digit_batch * 255).astype(np.uint8)
    np.testing.assert_allclose(
        model.encode(as_uint8).mean().numpy(), model.encode(as_uint8 / np.float32(255)).mean().numpy(), rtol=1e-6
    )


@pytest.mark.parametrize(
    "call,match",
    [
        (lambda m, x: m.encode(x[:, :4]), r"must have shape \(8, 8, 1\)"),
        (lambda m, x: m.encode(x * 2), r"must lie in \[0, 1\]"),
        (lambda m, x: m.encode(x[:0]), "empty"),
        (lambda m, x: m.fit(x, x), "`y` must be None"),
        (lambda m, x: m.fit(x, epochs=0), "`epochs`"),
        (lambda m, x: m.fit(x, batch_size=-3), "`batch_size`"),
        (lambda m, x: m.sample(0), "`num_samples`"),
        (lambda m, x: m.sample(2, temperature=-1), "`temperature`"),
        (lambda m, x: m.decode(np.zeros((2, 3))), r"`z` must have shape \(n, 2\)"),
        (lambda m, x: m.compile(loss="mse"), "`loss` is fixed"),
    ],
)
def test_bad_input_is_a_clear_error(call, match, digit_batch):
    model = VAE(input_shape=(8, 8, 1), latent_dim=2, seed=0)
    with pytest.raises((ValueError, TypeError), match=match):
        call(model, digit_batch)


def test_seeded_models_are_identical():
    a, b = VAE(input_shape=(8, 8, 1), latent_dim=2, seed=3), VAE(input_shape=(8, 8, 1), latent_dim=2, seed=3)
    for wa, wb in zip(a.get_weights(), b.get_weights()):
        np.testing.assert_array_equal(wa, wb)


def test_short_fit_on_real_mnist_lowers_the_loss(mnist_small):
    (x, _), (xt, _) = mnist_small
    model = VAE(latent_dim=8, seed=0)
    model.compile()
    before = model.evaluate(xt, batch_size=250, return_dict=True, verbose=0)
    hist = model.fit(x, epochs=2, batch_size=100, validation_data=xt, verbose=0).history
    after = model.evaluate(xt, batch_size=250, return_dict=True, verbose=0)
    # An untrained Bernoulli decoder with logits near 0 costs about 784 * log 2 = 543 nats.
    assert before["nll"] > 400
    assert after["loss"] < 0.5 * before["loss"]
    assert set(hist) >= {"loss", "nll", "kl", "elbo", "val_loss", "val_nll", "val_kl", "val_elbo"}
    assert model.training_history["loss"] == hist["loss"]


def test_fit_accepts_tf_data(digit_batch):
    model = VAE(input_shape=(8, 8, 1), latent_dim=2, seed=0)
    model.compile()
    ds = tf.data.Dataset.from_tensor_slices((digit_batch, np.zeros(len(digit_batch)))).batch(8)
    hist = model.fit(ds, epochs=2, verbose=0).history
    assert len(hist["loss"]) == 2 and np.isfinite(hist["loss"]).all()


def _with_weights(x):
    """(images, labels, per-image weights), as Keras packs weighted data."""
    return x, np.zeros(len(x)), np.zeros(len(x), np.float32)


@pytest.mark.parametrize(
    "call,name",
    [
        (lambda m, x: m.fit(x, sample_weight=np.zeros(len(x)), batch_size=8, verbose=0), "`sample_weight`"),
        (lambda m, x: m.fit(x, class_weight={0: 1.0, 1: 0.0}, batch_size=8, verbose=0), "`class_weight`"),
        (lambda m, x: m.evaluate(x, sample_weight=np.zeros(len(x)), verbose=0), "`sample_weight`"),
        (lambda m, x: m.fit(tf.data.Dataset.from_tensor_slices(_with_weights(x)).batch(8), verbose=0), "`x`"),
        (lambda m, x: m.evaluate(tf.data.Dataset.from_tensor_slices(_with_weights(x)).batch(8), verbose=0), "`x`"),
        (lambda m, x: m.fit(x, validation_data=_with_weights(x), verbose=0), "`validation_data`"),
        # Keras' own batch methods reach the training step with the weights: refused there.
        (lambda m, x: m.train_on_batch(*_with_weights(x)), "`sample_weight`"),
    ],
    ids=["fit", "class_weight", "evaluate", "dataset", "evaluate-dataset", "validation_data", "train_on_batch"],
)
def test_per_image_weights_are_refused_before_any_training(call, name, digit_batch):
    # The loss is the batch mean of every image's negative ELBO: weights would be dropped unseen
    # (all-zero weights still trained), so each way of passing them is an error naming it.
    model = VAE(input_shape=(8, 8, 1), latent_dim=2, seed=0)
    model.compile()
    before = model.get_weights()
    with pytest.raises(ValueError, match=f"{name} must .*per-image weights are not supported") as err:
        call(model, digit_batch)
    assert "negative ELBO" in str(err.value)
    assert int(model.optimizer.iterations) == 0 and model.training_history == {}
    for a, b in zip(before, model.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_labels_are_accepted_and_unused(digit_batch):
    # (images, labels) pairs, as tfpvae.datasets.load gives them, train as the images alone.
    labels = np.arange(len(digit_batch)) % 10
    runs = []
    for data, validation in (
        (tf.data.Dataset.from_tensor_slices((digit_batch, labels)).batch(8), (digit_batch, labels)),
        (tf.data.Dataset.from_tensor_slices(digit_batch).batch(8), digit_batch),
    ):
        tf.random.set_seed(0)  # the same posterior draws in both runs
        model = VAE(input_shape=(8, 8, 1), latent_dim=2, binarize="none", seed=0)
        model.compile()
        runs.append(model.fit(data, validation_data=validation, verbose=0, shuffle=False).history)
        runs[-1]["evaluate"] = model.evaluate(data, verbose=0)
    assert runs[0] == runs[1]


@pytest.mark.parametrize("name", ["metrics", "weighted_metrics", "loss_weights"])
def test_compile_refuses_keras_metrics_and_loss_weights(name):
    # train_step computes the negative ELBO and its own loss, nll, kl and elbo: Keras' compiled
    # metrics would never run, and there are no outputs to weight.
    model = VAE(input_shape=(8, 8, 1), latent_dim=2, seed=0)
    value = {"loss_weights": [0.5]}.get(name, ["mse"])
    with pytest.raises(ValueError, match=f"^`{name}` must be None: the model's loss \\(the negative ELBO\\)"):
        model.compile(**{name: value})
    assert model.optimizer is None  # not compiled


@pytest.mark.slow  # over 7 s; the fast tier skips it, CI runs it
def test_likelihood_methods_agree_with_the_estimator(digit_batch):
    model = VAE(input_shape=(8, 8, 1), latent_dim=2, seed=0)
    assert model.likelihood is model.likelihood  # built once, reused
    lp, se = model.log_prob(digit_batch, 32, seed=1, return_stderr=True)
    np.testing.assert_array_equal(lp, model.likelihood.log_prob(digit_batch, 32, seed=1))
    elbo = model.elbo(digit_batch, 32, seed=1)
    assert np.all(lp >= elbo - 1e-9)  # same draws: log-mean-exp >= mean
    np.testing.assert_allclose(model.bits_per_dim(digit_batch, 32, seed=1), -lp / (64 * np.log(2)), rtol=1e-12)
    rd = model.rate_distortion(digit_batch, 32, seed=1, analytic_kl=False)
    np.testing.assert_allclose(rd["rate"] + rd["distortion"], -elbo, rtol=1e-6)
    assert model.pixel_log_prob(digit_batch[:3], 8, seed=1).shape == (3, 8, 8, 1)


def test_autoencoder_refuses_likelihoods(digit_batch):
    from tfpvae.anomaly import AnomalyDetector, compute_scores
    from tfpvae.likelihood import LikelihoodEstimator

    ae = VAE(input_shape=(8, 8, 1), latent_dim=2, model_type="ae", seed=0)
    # Its q(z|x) is a point mass: log p(x|z) + log p(z) - log q bounds nothing, by any route.
    estimator = LikelihoodEstimator.from_model(ae)
    refusals = [
        lambda: ae.log_prob(digit_batch),
        lambda: ae.bits_per_dim(digit_batch),
        lambda: estimator.elbo(digit_batch),
        lambda: compute_scores(estimator, digit_batch, ("distortion", "elbo")),
        lambda: AnomalyDetector(ae, score="log_prob").fit(digit_batch),
    ]
    for refusal in refusals:
        with pytest.raises(ValueError, match="plain autoencoder"):
            refusal()
    # Its reconstruction term is still there, and scores it.
    distortion = compute_scores(estimator, digit_batch, ("distortion",), num_samples=10)["distortion"]
    np.testing.assert_allclose(distortion, -ae.rate_distortion(digit_batch, seed=0)["distortion"], rtol=1e-5)
    detector = AnomalyDetector(ae, score="distortion", num_samples=10, progress=False).fit(digit_batch)
    assert set(detector.predict(digit_batch)) <= {-1, 1}


# ------------------------------------------------------------------ IWAE training objective
def _repeat_losses(model, x, reps):
    """`_loss_terms` of the same batch `reps` times (fresh draws each time), as (reps, 3) numpy."""
    step = tf.function(lambda batch: tf.stack(model._loss_terms(batch, training=False)))
    batch = tf.constant(x)
    return np.stack([step(batch).numpy() for _ in range(reps)])


def _independent_bound(model, x, k, beta, reps, seed=0):
    """-mean_i [logsumexp_j log w_ij - log k] per repetition, from the three distributions, in numpy."""
    q = model.encode(x)
    n, d = len(x), model.config.latent_dim
    xk = np.tile(x, (k, 1, 1, 1))
    out = []
    for r in range(reps):
        z = q.sample(k, seed=seed + r)  # (k, n, d)
        log_q = q.log_prob(z).numpy().astype(np.float64)
        log_pz = model.prior.log_prob(z).numpy().astype(np.float64)
        log_px = model.decoder(tf.reshape(z, (-1, d))).log_prob(xk).numpy().reshape(k, n).astype(np.float64)
        log_w = log_px + beta * (log_pz - log_q)
        top = log_w.max(axis=0)
        bound = top + np.log(np.exp(log_w - top).mean(axis=0))
        out.append(-bound.mean())
    return np.asarray(out)


@pytest.fixture(scope="module")
def trained_pair(trained_digits):
    """A trained 8x8 model (k=1: the session's `trained_digits`, only read) and a k=50 copy with its weights."""
    tf.random.set_seed(0)  # the posterior draws of the tests below
    iwae_model = VAE(trained_digits.config.replace(train_samples=50))
    iwae_model.set_weights(trained_digits.get_weights())
    return trained_digits, iwae_model


def _agree(a, b, slack=0.02):
    se = np.sqrt(a.var(ddof=1) / len(a) + b.var(ddof=1) / len(b))
    assert abs(a.mean() - b.mean()) < 5 * se + slack, (a.mean(), b.mean(), se)


@pytest.mark.slow  # about 1,000 repeated loss evaluations: about 14 s on 2 cores
def test_iwae_loss_is_the_importance_weighted_bound(trained_pair, digit_batch):
    elbo_model, iwae_model = trained_pair
    x, k = digit_batch, iwae_model.config.train_samples
    terms = _repeat_losses(iwae_model, x, reps=100)
    # The KL regularizer still adds one term per encoder call, the closed-form KL.
    assert len(iwae_model.losses) == 1
    q = iwae_model.encode(x)
    np.testing.assert_allclose(
        terms[:, 2], kl_to_standard_normal(q.loc.numpy(), q.scale_tril.numpy()).mean(), rtol=1e-4
    )
    _agree(terms[:, 0], _independent_bound(iwae_model, x, k, beta=1.0, reps=100))
    # The same quantity from the likelihood module: -mean_i log p(x_i) with k importance samples.
    estimator = [-iwae_model.log_prob(x, k, seed=s).mean() for s in range(40)]
    _agree(terms[:, 0], np.asarray(estimator))
    # nll is the mean -log p(x|z) over all k draws: the ELBO model's nll in expectation.
    nll_ref, se = _mc_nll(iwae_model, x, num_samples=400)
    assert abs(terms[:, 1].mean() - nll_ref) < 5 * se + 0.05
    # A tighter bound: the k=50 loss lies clearly below the ELBO loss (k=1) of the same weights.
    elbo_terms = _repeat_losses(elbo_model, x, reps=400)
    gap = elbo_terms[:, 0].mean() - terms[:, 0].mean()
    noise = np.sqrt(elbo_terms[:, 0].var(ddof=1) / 400 + terms[:, 0].var(ddof=1) / 100)
    assert gap > 5 * noise and gap > 0.05, (gap, noise)


@pytest.mark.slow  # 200 repeated k=50 bounds: about 11 s
def test_iwae_loss_weights_the_prior_ratio_by_kl_weight(trained_pair, digit_batch):
    _, iwae_model = trained_pair
    iwae_model.kl_weight.assign(0.5)
    try:
        terms = _repeat_losses(iwae_model, digit_batch, reps=100)
    finally:
        iwae_model.kl_weight.assign(1.0)
    k = iwae_model.config.train_samples
    _agree(terms[:, 0], _independent_bound(iwae_model, digit_batch, k, beta=0.5, reps=100))


@pytest.mark.slow  # over 7 s; the fast tier skips it, CI runs it
def test_short_iwae_fit_lowers_the_loss_and_round_trips(digits, tmp_path):
    import json

    from tfpvae.model import load

    (x, _), (xt, _) = digits
    tf.random.set_seed(0)
    model = VAE(input_shape=(8, 8, 1), latent_dim=2, train_samples=3, seed=0)
    model.compile()
    hist = model.fit(x, epochs=3, batch_size=64, validation_data=xt, verbose=0).history
    assert hist["loss"][-1] < hist["loss"][0] - 1.0 and hist["val_loss"][-1] < hist["val_loss"][0]
    assert set(hist) == {"loss", "nll", "kl", "elbo", "val_loss", "val_nll", "val_kl", "val_elbo"}
    assert len(model.losses) == 1
    model.save(tmp_path / "m")
    assert json.loads((tmp_path / "m" / "config.json").read_text())["train_samples"] == 3
    again = load(tmp_path / "m")
    assert again.config == model.config and again.config.train_samples == 3
    for a, b in zip(model.get_weights(), again.get_weights()):
        np.testing.assert_array_equal(a, b)
    assert again.training_history == model.training_history


@pytest.mark.slow  # a dropout fit, save and reload: about 10 s
def test_dropout_trains_and_scores_with_the_whole_network(digits, tmp_path):
    from tfpvae.model import load

    (x, _), (xt, _) = digits
    tf.random.set_seed(0)
    model = VAE(input_shape=(8, 8, 1), latent_dim=2, dropout=0.3, seed=0)
    model.compile()
    hist = model.fit(x, epochs=3, batch_size=64, verbose=0).history
    assert np.isfinite(hist["loss"]).all() and hist["loss"][-1] < hist["loss"][0]
    # Same weights without dropout: every inference path must agree exactly.
    plain = VAE(model.config.replace(dropout=0.0))
    plain(xt[:1])
    plain.set_weights(model.get_weights())
    np.testing.assert_array_equal(model.log_prob(xt[:50], 16, seed=1), plain.log_prob(xt[:50], 16, seed=1))
    np.testing.assert_allclose(model.reconstruct(xt[:20]), plain.reconstruct(xt[:20]), rtol=1e-6)
    # The training loss calls encoder and decoder with training=True: there the masks act.
    for net, inputs in ((model.encoder, xt[:20]), (model.decoder, np.zeros((20, 2), np.float32))):
        twin = plain.encoder if net is model.encoder else plain.decoder
        whole = twin(inputs, training=True).mean().numpy()
        np.testing.assert_allclose(net(inputs, training=False).mean().numpy(), whole, rtol=1e-6)
        assert np.abs(net(inputs, training=True).mean().numpy() - whole).max() > 1e-3
    model.save(tmp_path / "m")
    again = load(tmp_path / "m")
    assert again.config.dropout == 0.3
    np.testing.assert_array_equal(again.log_prob(xt[:50], 16, seed=1), model.log_prob(xt[:50], 16, seed=1))


@pytest.mark.slow  # a VampPrior fit, save and reload: about 13 s
def test_vamp_prior_mixes_the_encoders_posteriors_and_follows_training(digits, tmp_path):
    from tfpvae.model import load

    (x, _), (xt, _) = digits
    model = VAE(input_shape=(8, 8, 1), latent_dim=2, prior="vamp", num_components=4, train_samples=2, seed=0)
    z = np.random.default_rng(0).normal(size=(6, 2)).astype(np.float32)

    def reference():  # log (1/K) sum_j q(z | u_j) through the model's own encoder
        q = model.encode(model.prior_layer.pseudo_inputs.numpy())
        lq = np.stack([q[j].log_prob(z).numpy() for j in range(4)], axis=1).astype(np.float64)
        return np.log(np.exp(lq).mean(axis=1))

    np.testing.assert_allclose(model.prior.log_prob(z), reference(), rtol=1e-5)
    estimator = model.likelihood  # built before training: it must see the trained prior
    model.compile()
    model.fit(x, epochs=2, batch_size=64, verbose=0)
    np.testing.assert_allclose(model.prior.log_prob(z), reference(), rtol=1e-5)
    fresh = type(estimator).from_model(model)
    np.testing.assert_allclose(estimator.log_prob(xt[:20], 8, seed=1), fresh.log_prob(xt[:20], 8, seed=1), rtol=1e-6)
    model.save(tmp_path / "m")
    again = load(tmp_path / "m")
    assert again.config.prior == "vamp"
    np.testing.assert_array_equal(again.prior_layer.pseudo_inputs.numpy(), model.prior_layer.pseudo_inputs.numpy())
    np.testing.assert_allclose(again.log_prob(xt[:20], 8, seed=1), model.log_prob(xt[:20], 8, seed=1), rtol=1e-6)
    assert again.sample(3, seed=0).shape == (3, 8, 8, 1)
