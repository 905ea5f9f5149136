"""The prior p(z): a Keras layer that owns the prior's variables and exposes it as a distribution.

Keeping the variables in a layer means the VAE tracks, saves and trains them like any
other weight; the `tfd.Distribution` built on top reads them lazily, so the same object
can be handed to `tfp.layers.KLDivergenceRegularizer` once and still see every update.
"""

from __future__ import annotations

import numpy as np

from tfpvae._keras import tf, tfb, tfd, tfkl, tfp
from tfpvae._validation import check_choice, check_float, check_int
from tfpvae.config import PRIORS


class Prior(tfkl.Layer):
    """Prior over the latent space, with trainable variables for the learned kinds.

    Args:
      kind: "normal" (fixed standard normal), "learned_normal" (trainable loc and
        scale_tril) or "mixture" (trainable mixture of `num_components` diagonal Gaussians).
      latent_dim: dimension of z.
      num_components: mixture components; used by "mixture" only. Default 10.
      seed: seed for the mixture's initial component locations. Default None.

    Attributes:
      distribution: a `tfd.Distribution` with event shape (latent_dim,).
      exact_kl: whether KL(MultivariateNormalTriL || distribution) has a closed form
        registered in TFP (True for the Gaussian kinds, False for the mixture).
    """

    def __init__(self, kind: str, latent_dim: int, num_components: int = 10, seed: int | None = None, **kwargs) -> None:
        super().__init__(**kwargs)
        self.kind = check_choice(kind, "prior", PRIORS)
        self.latent_dim = check_int(latent_dim, "latent_dim")
        self.num_components = check_int(num_components, "num_components")
        d = self.latent_dim
        if kind == "normal":
            # MultivariateNormalDiag, not Independent(Normal): TFP registers an exact KL
            # from MultivariateNormalTriL only to the MVN family.
            self.distribution = tfd.MultivariateNormalDiag(loc=tf.zeros(d), scale_diag=tf.ones(d))
            self.exact_kl = True
        elif kind == "learned_normal":
            fill = tfb.FillScaleTriL()
            self.loc = self.add_weight(name="loc", shape=(d,), initializer="zeros")
            raw = fill.inverse(tf.eye(d)).numpy()  # starts exactly at N(0, I)
            self.raw_scale_tril = self.add_weight(
                name="raw_scale_tril", shape=raw.shape, initializer=tf.constant_initializer(raw)
            )
            self.distribution = tfd.MultivariateNormalTriL(
                loc=self.loc, scale_tril=tfp.util.DeferredTensor(self.raw_scale_tril, fill)
            )
            self.exact_kl = True
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
            self.distribution = tfd.MixtureSameFamily(
                mixture_distribution=tfd.Categorical(logits=self.logits),
                components_distribution=tfd.MultivariateNormalDiag(
                    loc=self.locs, scale_diag=tfp.util.DeferredTensor(self.raw_scales, tf.math.softplus)
                ),
            )
            self.exact_kl = False

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
    if seed is not None:
        seed = check_int(seed, "seed", minimum=0)
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
