"""The prior p(z): a Keras layer that owns the prior's variables and exposes it as a distribution.

Each built-in prior is a registered builder (`tfpvae.register_prior`), as a user's is;
`build_prior` is the one way a model gets its prior.

Keeping the variables in a layer means the VAE tracks, saves and trains them like any
other weight; the `tfd.Distribution` built on top reads them lazily, so the same object
can be handed to `tfp.layers.KLDivergenceRegularizer` once and still see every update.
The VampPrior depends on the encoder as well, so its distribution is rebuilt from the
current weights each time it is read.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from tfpvae import registry
from tfpvae._keras import tf, tfb, tfd, tfk, tfkl, tfp, unwrap
from tfpvae._validation import MAX_INT32_SEED, check_bool, check_float, check_int, check_seed, check_shape
from tfpvae.config import VAEConfig


class PosteriorMixture(tfd.MixtureSameFamily):
    """A `MixtureSameFamily` of `MultivariateNormalTriL` components with a fast `log_prob`.

    TFP's log_prob of z against K full-covariance components broadcasts the K scale_tril
    matrices to every point and solves each (point, component) pair on its own, about 16x
    slower than one triangular solve per component for all points at once, which is what
    this does (the VampPrior, with K in the hundreds, spent most of its step there).
    Everything else (sampling, moments, the components) is `MixtureSameFamily`'s.
    """

    def _log_prob(self, x):
        components = self.components_distribution
        loc = components.loc  # (K, d)
        scale_tril = components.scale.to_dense()  # (K, d, d)
        x = tf.convert_to_tensor(x, loc.dtype)
        d = tf.shape(loc)[-1]
        points = tf.reshape(x, [-1, d])  # (N, d)
        # Whitened residuals L_j^{-1} (z_n - mu_j) of every point, one solve per component.
        residuals = tf.transpose(points[None] - loc[:, None], [0, 2, 1])  # (K, d, N)
        white = tf.linalg.triangular_solve(scale_tril, residuals, lower=True)
        log_det = tf.reduce_sum(tf.math.log(tf.abs(tf.linalg.diag_part(scale_tril))), axis=-1)  # (K,)
        half_log_2pi = 0.5 * np.log(2 * np.pi).astype(loc.dtype.as_numpy_dtype)
        log_comp = -0.5 * tf.reduce_sum(tf.square(white), axis=1) - log_det[:, None]
        log_comp -= tf.cast(d, loc.dtype) * half_log_2pi  # (K, N)
        log_weights = tf.math.log_softmax(self.mixture_distribution.logits_parameter())  # (K,)
        log_p = tf.reduce_logsumexp(log_comp + log_weights[:, None], axis=0)  # (N,)
        return tf.reshape(log_p, tf.shape(x)[:-1])


class PriorLayer(tfkl.Layer):
    """Base class of the prior layers: owns the variables, exposes p(z) as `distribution`.

    Subclasses create their variables in `__init__` and implement the `distribution`
    property (a `tfd.Distribution` with batch shape () and event shape (latent_dim,),
    reading the variables, so it sees every update).

    Attributes:
      distribution: the prior p(z).
      exact_kl: whether the model takes the closed-form KL(MultivariateNormalTriL ||
        distribution); a Monte Carlo estimate otherwise. By default, whether TFP has that
        closed form. A subclass may state it, as a class attribute (`exact_kl = False`)
        or in `__init__` (`self.exact_kl = False`); None restores the default.
    """

    @property
    def distribution(self) -> tfd.Distribution:
        raise NotImplementedError(f"{type(self).__name__} must define the `distribution` property.")

    @property
    def exact_kl(self) -> bool:
        if getattr(self, "_exact_kl", None) is None:
            object.__setattr__(self, "_exact_kl", has_exact_kl(self.distribution))
        return self._exact_kl

    @exact_kl.setter
    def exact_kl(self, value: bool | None) -> None:
        # A layer may state it (docs/extending.md); None goes back to working it out.
        object.__setattr__(self, "_exact_kl", check_bool(value, "exact_kl", allow_none=True))

    def call(self, inputs=None):  # noqa: D102 - the layer is used through `.distribution`
        return self.distribution


class FixedPrior(PriorLayer):
    """A prior with no trainable variables: the distribution it was given.

    Args:
      distribution: p(z), batch shape () and event shape (latent_dim,).
      **kwargs: passed to the Keras layer (name, ...).
    """

    def __init__(self, distribution: tfd.Distribution, **kwargs) -> None:
        super().__init__(**kwargs)
        if not isinstance(distribution, tfd.Distribution):
            raise TypeError(f"`distribution` must be a tfd.Distribution; got {type(distribution).__name__}.")
        self._distribution = distribution

    @property
    def distribution(self) -> tfd.Distribution:  # noqa: D102 - documented in the class
        return self._distribution


class LearnedNormalPrior(PriorLayer):
    """A full-covariance Gaussian prior with trainable loc and scale_tril, starting at N(0, I).

    Args:
      latent_dim: dimension of z.
      **kwargs: passed to the Keras layer.
    """

    def __init__(self, latent_dim: int, **kwargs) -> None:
        super().__init__(**kwargs)
        d = check_int(latent_dim, "latent_dim")
        fill = tfb.FillScaleTriL()
        self.loc = self.add_weight(name="loc", shape=(d,), initializer="zeros")
        raw = fill.inverse(tf.eye(d)).numpy()  # starts exactly at N(0, I)
        self.raw_scale_tril = self.add_weight(
            name="raw_scale_tril", shape=raw.shape, initializer=tf.constant_initializer(raw)
        )
        self._distribution = tfd.MultivariateNormalTriL(
            loc=self.loc, scale_tril=tfp.util.DeferredTensor(self.raw_scale_tril, fill)
        )

    @property
    def distribution(self) -> tfd.Distribution:  # noqa: D102 - documented in the base class
        return self._distribution


class MixturePrior(PriorLayer):
    """A trainable mixture of `num_components` diagonal Gaussians.

    Args:
      latent_dim: dimension of z.
      num_components: mixture components.
      seed: seed for the initial component locations (standard normal draws).
      **kwargs: passed to the Keras layer.
    """

    def __init__(self, latent_dim: int, num_components: int = 10, seed: int | None = None, **kwargs) -> None:
        super().__init__(**kwargs)
        d, k = check_int(latent_dim, "latent_dim"), check_int(num_components, "num_components")
        rng = np.random.default_rng(seed)
        self.logits = self.add_weight(name="logits", shape=(k,), initializer="zeros")
        self.locs = self.add_weight(
            name="locs", shape=(k, d), initializer=tf.constant_initializer(rng.normal(size=(k, d)).astype(np.float32))
        )
        # softplus(0.5413) = 1: components start with unit scale.
        self.raw_scales = self.add_weight(
            name="raw_scales", shape=(k, d), initializer=tf.constant_initializer(0.5413249)
        )
        self._distribution = tfd.MixtureSameFamily(
            mixture_distribution=tfd.Categorical(logits=self.logits),
            components_distribution=tfd.MultivariateNormalDiag(
                loc=self.locs, scale_diag=tfp.util.DeferredTensor(self.raw_scales, tf.math.softplus)
            ),
        )

    @property
    def distribution(self) -> tfd.Distribution:  # noqa: D102 - documented in the base class
        return self._distribution


class VampPrior(PriorLayer):
    """VampPrior (Tomczak & Welling 2018): the mixture of q(z|u_j) of trainable pseudo-images u_j.

    Args:
      num_components: number of pseudo-images; `VAEConfig.num_components` (default 10)
        gives it. The paper uses 500.
      input_shape: (H, W, C) of the pseudo-images.
      seed: seed for the pseudo-images' initial noise.
      **kwargs: passed to the Keras layer.

    Attributes:
      distribution: a `PosteriorMixture` of `MultivariateNormalTriL`, rebuilt from the
        encoder's current weights each time it is read (see `attach_posterior`).
      pseudo_inputs: the pseudo-images, float32 (num_components, H, W, C) in (0, 1).
    """

    exact_kl = False  # a mixture: TFP has no closed form

    def __init__(
        self, num_components: int, input_shape: tuple[int, int, int], seed: int | None = None, **kwargs
    ) -> None:
        super().__init__(**kwargs)
        self.num_components = check_int(num_components, "num_components")
        shape = (self.num_components, *check_shape(input_shape, "input_shape"))
        self._posterior_fn = None
        # Pseudo-images as logits, so the sigmoid keeps their pixels in (0, 1) like real
        # images; they start near 0.05 with a little noise, as in the paper.
        start = np.random.default_rng(seed).normal(0.05, 0.01, size=shape).clip(1e-3, 1 - 1e-3)
        self.pseudo_logits = self.add_weight(
            name="pseudo_logits",
            shape=shape,
            initializer=tf.constant_initializer(np.log(start / (1 - start)).astype(np.float32)),
        )

    @property
    def pseudo_inputs(self) -> tf.Tensor:  # noqa: D102 - documented in the class
        return tf.sigmoid(self.pseudo_logits)

    def attach_posterior(self, posterior_fn: Callable[[tf.Tensor], tfd.Distribution]) -> None:
        """Gives the prior the encoder it mixes: images (K, H, W, C) -> q(z|u), batch (K,).

        `tfpvae.model.build_encoder` calls this with the encoder's body and posterior head.
        """
        if not callable(posterior_fn):
            raise TypeError(f"`posterior_fn` must be callable; got {type(posterior_fn).__name__}.")
        self._posterior_fn = posterior_fn

    @property
    def distribution(self) -> tfd.Distribution:  # noqa: D102 - documented in the class
        if self._posterior_fn is None:
            raise RuntimeError("This VampPrior has no encoder yet: call `attach_posterior` (build_encoder does).")
        components = unwrap(self._posterior_fn(self.pseudo_inputs))
        return PosteriorMixture(
            mixture_distribution=tfd.Categorical(logits=tf.zeros([self.num_components], components.dtype)),
            components_distribution=components,
        )


class FlowPrior(PriorLayer):
    """A masked autoregressive flow (Papamakarios et al. 2017) over a standard normal.

    z = f_L(...f_1(e)), e ~ N(0, I), each f_i a `tfb.MaskedAutoregressiveFlow` whose shift
    and log-scale come from a MADE network (`tfb.AutoregressiveNetwork`, two hidden layers)
    with the dimension order reversed between transforms. log p(z) (what training needs,
    at every posterior draw) is one network pass per transform; sampling takes latent_dim
    passes per transform. The KL to it is a Monte Carlo estimate.

    Args:
      latent_dim: dimension of z.
      num_layers: number of transforms.
      hidden_units: width of each MADE's two hidden layers.
      seed: seed for the initial weights.
      **kwargs: passed to the Keras layer.
    """

    def __init__(
        self, latent_dim: int, num_layers: int = 4, hidden_units: int = 128, seed: int | None = None, **kwargs
    ) -> None:
        super().__init__(**kwargs)
        d = check_int(latent_dim, "latent_dim")
        num_layers, hidden_units = check_int(num_layers, "num_layers"), check_int(hidden_units, "hidden_units")
        # A seed always: each MADE reuses its initializer for every layer, which an unseeded
        # one (warning about identical values) does not allow.
        seed = int(np.random.default_rng().integers(2**20)) if seed is None else seed
        self.mades = [
            tfb.AutoregressiveNetwork(
                params=2,
                event_shape=[d],
                hidden_units=[hidden_units, hidden_units],
                activation="elu",
                kernel_initializer=tfk.initializers.GlorotUniform(seed=seed * 1000 + 700 + i),
                name=f"made_{i}",
            )
            for i in range(num_layers)
        ]
        transforms = []
        for i, made in enumerate(self.mades):
            if i:
                transforms.append(tfb.Permute(list(reversed(range(d)))))
            transforms.append(tfb.MaskedAutoregressiveFlow(shift_and_log_scale_fn=_soft_clamped(made)))
        base = tfd.MultivariateNormalDiag(loc=tf.zeros(d), scale_diag=tf.ones(d))
        # Chain applies its last bijector first: e passes f_1 first.
        self._distribution = tfd.TransformedDistribution(base, tfb.Chain(list(reversed(transforms))))
        self._distribution.log_prob(tf.zeros([1, d]))  # creates the MADE weights now, for saving and loading

    @property
    def distribution(self) -> tfd.Distribution:  # noqa: D102 - documented in the base class
        return self._distribution


def _soft_clamped(made: tfkl.Layer) -> Callable[[tf.Tensor], tuple[tf.Tensor, tf.Tensor]]:
    """The MADE's (shift, log_scale), with log_scale softly kept in (-3, 3).

    An unbounded log-scale lets one transform stretch by e^10 early in training, which
    sends the Monte Carlo KL to infinity; 3 tanh(s / 3) is s near 0 and bounded far away.
    """

    def shift_and_log_scale(x):
        shift, log_scale = tf.unstack(made(x), axis=-1)
        return shift, 3.0 * tf.tanh(log_scale / 3.0)

    return shift_and_log_scale


def has_exact_kl(distribution: tfd.Distribution) -> bool:
    """Whether TFP has a closed-form KL from a `MultivariateNormalTriL` posterior to `distribution`."""
    d = int(distribution.event_shape[-1])
    q = tfd.MultivariateNormalTriL(
        loc=tf.zeros([d], distribution.dtype), scale_tril=tf.eye(d, dtype=distribution.dtype)
    )
    try:
        tfd.kl_divergence(q, distribution)
    except NotImplementedError:
        return False
    return True


def uses_exact_kl(layer: Any) -> bool:
    """Whether the model takes the closed-form KL to this prior layer.

    The layer's own `exact_kl` if it states one (a `PriorLayer` works it out), else whether
    TFP has the closed form (`has_exact_kl`).
    """
    stated = getattr(layer, "exact_kl", None)
    return bool(stated) if stated is not None else has_exact_kl(layer.distribution)


def check_prior(layer: Any, latent_dim: int, name: str) -> None:
    """Checks that a prior builder's layer has a `distribution` with batch shape () and event shape (latent_dim,)."""
    if not isinstance(layer, tfkl.Layer) or "distribution" not in dir(layer):
        raise TypeError(
            f"The builder of prior {name!r} must return a tf_keras layer with a `distribution` attribute "
            f"(subclass tfpvae.priors.PriorLayer); got {type(layer).__module__}.{type(layer).__name__}."
        )
    dist = layer.distribution
    if not isinstance(dist, tfd.Distribution):
        raise TypeError(f"Prior {name!r}: `distribution` must be a tfd.Distribution; got {type(dist).__name__}.")
    if dist.event_shape != [latent_dim] or dist.batch_shape != []:
        raise ValueError(
            f"Prior {name!r} must have batch shape () and event shape ({latent_dim},) (latent_dim); "
            f"got batch shape {tuple(dist.batch_shape)} and event shape {tuple(dist.event_shape)}."
        )


def build_prior(config: VAEConfig) -> tfkl.Layer:
    """Builds the prior layer of `config.prior` through the registry (`tfpvae.register_prior`).

    A prior made from the encoder (one with `attach_posterior`, such as the VampPrior) is
    checked by the model once its encoder is attached; others are checked here.

    An autoencoder (model_type "ae") takes only a fixed prior: its loss has no KL term, so
    a prior's weights would never train and `VAE.sample` would draw from their initial
    values. `VAEConfig` refuses the built-in trainable priors; a registered prior, whose
    weights are known only once built, is refused here if its layer has trainable weights
    (create them with `trainable=False`, or set `layer.trainable = False`, for a prior
    that is meant to stay fixed).

    Raises:
      UnregisteredNameError: no builder is registered under `config.prior`.
      TypeError, ValueError: the builder's layer is not a prior of event shape (latent_dim,).
      ValueError: `config.model_type` is "ae" and the prior has trainable weights.
    """
    layer = registry.priors.get(config.prior)(config)
    if not hasattr(layer, "attach_posterior"):
        check_prior(layer, config.latent_dim, config.prior)  # reads `distribution`: lazy weights exist after it
    if config.model_type != "vae" and getattr(layer, "trainable_weights", None):
        raise ValueError(
            f"`prior={config.prior!r}` has trainable weights, which model_type={config.model_type!r} never trains "
            "(an autoencoder's loss has no KL term); use a prior without trainable weights, such as "
            "prior='normal', or model_type='vae'."
        )
    return layer


def Prior(  # noqa: N802 - kept from when the priors were one class
    kind: str,
    latent_dim: int,
    num_components: int = 10,
    seed: int | None = None,
    input_shape: tuple[int, int, int] | None = None,
) -> tfkl.Layer:
    """Builds the prior `kind` (any registered name) for a `latent_dim`-dimensional z.

    Args:
      kind: "normal", "learned_normal", "mixture", "vamp", "flow", or a registered name.
      latent_dim: dimension of z.
      num_components: mixture components or pseudo-images.
      seed: seed for the initial values.
      input_shape: (H, W, C) of the images; "vamp" needs it for its pseudo-images.

    Returns:
      The prior layer; see `build_prior`.
    """
    if kind == "vamp" and input_shape is None:
        raise ValueError("`input_shape` (H, W, C) is needed for prior='vamp', the shape of its pseudo-images.")
    fields = {"latent_dim": latent_dim, "num_components": num_components, "seed": seed, "prior": kind}
    return build_prior(VAEConfig(input_shape=input_shape or (1, 1, 1), **fields))


def sample_prior(
    distribution: tfd.Distribution, num_samples: int, temperature: float = 1.0, seed: int | None = None
) -> tf.Tensor:
    """Draws latent codes from a prior, with a temperature that scales their spread.

    For a Gaussian prior, z = loc + temperature * (z0 - loc) with z0 ~ p(z); for a mixture,
    the component is drawn first and the spread is scaled around that component's mean, so
    a low temperature gives prototypical samples of every component rather than the
    (possibly empty) mixture mean; for a flow (a `TransformedDistribution`), the base
    distribution's draws are scaled and then mapped through the flow.

    Args:
      distribution: the prior, event shape (latent_dim,).
      num_samples: number of codes to draw.
      temperature: spread multiplier, > 0. Default 1.0: exact prior samples, for any
        prior (no centre is used). Another temperature needs a prior whose mean (of
        each component, for a mixture; of the base, for a flow) is finite.
      seed: int seed for reproducible draws. Default None (fresh draws).

    Returns:
      float32 tensor of shape (num_samples, latent_dim).

    Raises:
      ValueError: `temperature` is not 1.0 and the prior has no finite mean to scale the
        spread around (a heavy-tailed prior, such as a Cauchy); or the codes are not finite
        (a temperature so large that they overflow float32).
    """
    num_samples = check_int(num_samples, "num_samples")
    temperature = check_float(temperature, "temperature", minimum=0.0, min_inclusive=False)
    z = _draw(distribution, num_samples, temperature, check_seed(seed, maximum=MAX_INT32_SEED))
    if not bool(tf.reduce_all(tf.math.is_finite(z))):  # the decoder would blame its own input
        raise ValueError(
            f"`temperature`={temperature} spreads the prior's codes beyond float32's range; use a smaller one."
            if temperature > 1.0 and bool(tf.reduce_all(tf.math.is_finite(_draw(distribution, 1, 1.0, seed))))
            else "The prior drew codes that are not finite: its parameters (or a flow's layers) give NaN or Inf."
        )
    return z


def _draw(distribution: tfd.Distribution, num_samples: int, temperature: float, seed: int | None) -> tf.Tensor:
    """`sample_prior`'s draws, of checked arguments."""
    # A length-2 int tensor is a stateless seed in TFP: the same seed always gives the same
    # draws (a plain int would seed a stateful op, which differs call to call).
    seeds = tfp.random.split_seed(tf.constant([seed, 0], tf.int32), 2) if seed is not None else (None, None)
    # (TFP's TransformedDistribution of non-tensor bijectors is a private class: duck-typed.)
    if isinstance(getattr(distribution, "bijector", None), tfb.Bijector):
        # A flow: the temperature scales the base draws, then the bijector maps them.
        base = _draw(distribution.distribution, num_samples, temperature, seed)
        return distribution.bijector.forward(base)
    if isinstance(distribution, tfd.MixtureSameFamily):
        components = distribution.components_distribution
        index = distribution.mixture_distribution.sample(num_samples, seed=seeds[0])
        z_all = components.sample(num_samples, seed=seeds[1])  # (n, k, d)
        z = tf.gather(z_all, index, axis=1, batch_dims=1)
        if temperature == 1.0:
            # Exact samples; no centre: a heavy-tailed prior has no mean, and NaN - NaN is NaN.
            # (Drawn component first, as at other temperatures, so a seed gives the same components.)
            return z
        center = tf.gather(_finite_mean(components, temperature), index)
    else:
        z = distribution.sample(num_samples, seed=seeds[0])
        if temperature == 1.0:
            return z
        center = _finite_mean(distribution, temperature)
    return center + temperature * (z - center)


def _finite_mean(distribution: tfd.Distribution, temperature: float) -> tf.Tensor:
    """The mean `sample_prior` scales the spread around, or a ValueError naming `temperature` if it has none."""
    try:
        mean = distribution.mean()
    except (NotImplementedError, ValueError, tf.errors.InvalidArgumentError):
        # No mean implemented, or (allow_nan_stats=False) TFP's refusal of an undefined one.
        mean = None
    if mean is None or not bool(tf.reduce_all(tf.math.is_finite(mean))):
        raise ValueError(
            f"`temperature` {temperature} needs a prior with a finite mean to scale the spread around; "
            f"prior {distribution.name!r} ({type(distribution).__name__}) has none: sample it at temperature=1.0."
        )
    return mean


def _register_builtins() -> None:
    """Registers the built-in priors under their names, as a user registers theirs."""
    builders = {
        "normal": lambda c: FixedPrior(
            # MultivariateNormalDiag, not Independent(Normal): TFP registers an exact KL
            # from MultivariateNormalTriL only to the MVN family.
            tfd.MultivariateNormalDiag(loc=tf.zeros(c.latent_dim), scale_diag=tf.ones(c.latent_dim)),
            name="prior",
        ),
        "learned_normal": lambda c: LearnedNormalPrior(c.latent_dim, name="prior"),
        "mixture": lambda c: MixturePrior(c.latent_dim, c.num_components, seed=c.seed, name="prior"),
        "vamp": lambda c: VampPrior(c.num_components, c.input_shape, seed=c.seed, name="prior"),
        "flow": lambda c: FlowPrior(c.latent_dim, c.flow_layers, c.flow_hidden_units, seed=c.seed, name="prior"),
    }
    for name, builder in builders.items():
        registry.priors.register(name, _builtin=True)(builder)


_register_builtins()
