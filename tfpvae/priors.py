"""The prior p(z): a Keras layer that owns the prior's variables and exposes it as a distribution.

Keeping the variables in a layer means the VAE tracks, saves and trains them like any
other weight; the `tfd.Distribution` built on top reads them lazily, so the same object
can be handed to `tfp.layers.KLDivergenceRegularizer` once and still see every update.
The VampPrior depends on the encoder as well, so its distribution is rebuilt from the
current weights each time it is read.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from tfpvae._keras import tf, tfb, tfd, tfkl, tfp, unwrap
from tfpvae._validation import MAX_INT32_SEED, check_choice, check_float, check_int, check_seed, check_shape
from tfpvae.config import PRIORS


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


class Prior(tfkl.Layer):
    """Prior over the latent space, with trainable variables for the learned kinds.

    Args:
      kind: "normal" (fixed standard normal), "learned_normal" (trainable loc and
        scale_tril), "mixture" (trainable mixture of `num_components` diagonal Gaussians)
        or "vamp" (VampPrior, Tomczak & Welling 2018: the equally weighted mixture of the
        encoder's posteriors q(z|u_j) of `num_components` trainable pseudo-images u_j).
      latent_dim: dimension of z.
      num_components: mixture components or pseudo-images; used by "mixture" and "vamp".
        Default 10.
      seed: seed for the initial component locations or pseudo-images. Default None.
      input_shape: (H, W, C) of the pseudo-images; required by "vamp" only.

    Attributes:
      distribution: a `tfd.Distribution` with event shape (latent_dim,). For "vamp" it is
        a `PosteriorMixture` of `MultivariateNormalTriL`, rebuilt from the encoder's
        current weights each time this attribute is read (see `attach_posterior`).
      exact_kl: whether KL(MultivariateNormalTriL || distribution) has a closed form
        registered in TFP (True for the Gaussian kinds, False for the mixtures).
    """

    def __init__(
        self,
        kind: str,
        latent_dim: int,
        num_components: int = 10,
        seed: int | None = None,
        input_shape: tuple[int, int, int] | None = None,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        self.kind = check_choice(kind, "prior", PRIORS)
        self.latent_dim = check_int(latent_dim, "latent_dim")
        self.num_components = check_int(num_components, "num_components")
        self._posterior_fn = None
        d = self.latent_dim
        if kind == "normal":
            # MultivariateNormalDiag, not Independent(Normal): TFP registers an exact KL
            # from MultivariateNormalTriL only to the MVN family.
            self._distribution = tfd.MultivariateNormalDiag(loc=tf.zeros(d), scale_diag=tf.ones(d))
            self.exact_kl = True
        elif kind == "learned_normal":
            fill = tfb.FillScaleTriL()
            self.loc = self.add_weight(name="loc", shape=(d,), initializer="zeros")
            raw = fill.inverse(tf.eye(d)).numpy()  # starts exactly at N(0, I)
            self.raw_scale_tril = self.add_weight(
                name="raw_scale_tril", shape=raw.shape, initializer=tf.constant_initializer(raw)
            )
            self._distribution = tfd.MultivariateNormalTriL(
                loc=self.loc, scale_tril=tfp.util.DeferredTensor(self.raw_scale_tril, fill)
            )
            self.exact_kl = True
        elif kind == "vamp":
            if input_shape is None:
                raise ValueError("`input_shape` (H, W, C) is needed for prior='vamp', the shape of its pseudo-images.")
            shape = (self.num_components, *check_shape(input_shape, "input_shape"))
            # Pseudo-images as logits, so the sigmoid keeps their pixels in (0, 1) like real
            # images; they start near 0.05 with a little noise, as in the paper.
            start = np.random.default_rng(seed).normal(0.05, 0.01, size=shape).clip(1e-3, 1 - 1e-3)
            self.pseudo_logits = self.add_weight(
                name="pseudo_logits",
                shape=shape,
                initializer=tf.constant_initializer(np.log(start / (1 - start)).astype(np.float32)),
            )
            self.exact_kl = False
        else:
            k = self.num_components
            rng = np.random.default_rng(seed)
            self.logits = self.add_weight(name="logits", shape=(k,), initializer="zeros")
            self.locs = self.add_weight(
                name="locs",
                shape=(k, d),
                initializer=tf.constant_initializer(rng.normal(size=(k, d)).astype(np.float32)),
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
            self.exact_kl = False

    @property
    def pseudo_inputs(self) -> tf.Tensor:
        """The VampPrior's pseudo-images, float32 (num_components, H, W, C) in (0, 1)."""
        if self.kind != "vamp":
            raise AttributeError(f"Only prior='vamp' has pseudo-inputs; this prior is {self.kind!r}.")
        return tf.sigmoid(self.pseudo_logits)

    def attach_posterior(self, posterior_fn: Callable[[tf.Tensor], tfd.Distribution]) -> None:
        """Gives a "vamp" prior the encoder it mixes: images (K, H, W, C) -> q(z|u), batch (K,).

        `tfpvae.model.build_encoder` calls this with the encoder's body and posterior head.
        """
        if self.kind != "vamp":
            raise ValueError(f"Only prior='vamp' mixes encoder posteriors; this prior is {self.kind!r}.")
        if not callable(posterior_fn):
            raise TypeError(f"`posterior_fn` must be callable; got {type(posterior_fn).__name__}.")
        self._posterior_fn = posterior_fn

    @property
    def distribution(self) -> tfd.Distribution:  # noqa: D102 - documented in the class
        if self.kind != "vamp":
            return self._distribution
        if self._posterior_fn is None:
            raise RuntimeError("This VampPrior has no encoder yet: call `attach_posterior` (build_encoder does).")
        components = self._posterior_fn(self.pseudo_inputs)
        components = unwrap(components)
        return PosteriorMixture(
            mixture_distribution=tfd.Categorical(logits=tf.zeros([self.num_components], components.dtype)),
            components_distribution=components,
        )

    def call(self, inputs=None):  # noqa: D102 - the layer is used through `.distribution`
        return self.distribution


def sample_prior(
    distribution: tfd.Distribution, num_samples: int, temperature: float = 1.0, seed: int | None = None
) -> tf.Tensor:
    """Draws latent codes from a prior, with a temperature that scales their spread.

    For a Gaussian prior, z = loc + temperature * (z0 - loc) with z0 ~ p(z); for a mixture,
    the component is drawn first and the spread is scaled around that component's mean, so
    a low temperature gives prototypical samples of every component rather than the
    (possibly empty) mixture mean.

    Args:
      distribution: the prior, event shape (latent_dim,).
      num_samples: number of codes to draw.
      temperature: spread multiplier, > 0. Default 1.0 (exact prior samples).
      seed: int seed for reproducible draws. Default None.

    Returns:
      float32 tensor of shape (num_samples, latent_dim).
    """
    num_samples = check_int(num_samples, "num_samples")
    temperature = check_float(temperature, "temperature", minimum=0.0, min_inclusive=False)
    seed = check_seed(seed, maximum=MAX_INT32_SEED)
    # A length-2 int tensor is a stateless seed in TFP: the same seed always gives the same
    # draws (a plain int would seed a stateful op, which differs call to call).
    seeds = tfp.random.split_seed(tf.constant([seed, 0], tf.int32), 2) if seed is not None else (None, None)
    if isinstance(distribution, tfd.MixtureSameFamily):
        components = distribution.components_distribution
        index = distribution.mixture_distribution.sample(num_samples, seed=seeds[0])
        z_all = components.sample(num_samples, seed=seeds[1])  # (n, k, d)
        z = tf.gather(z_all, index, axis=1, batch_dims=1)
        center = tf.gather(components.mean(), index)
    else:
        z = distribution.sample(num_samples, seed=seeds[0])
        center = distribution.mean()
    return center + temperature * (z - center)
