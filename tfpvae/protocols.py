"""The small interfaces that the scoring, latent and uncertainty tools use a model through.

`LatentModel` names the four things the latent and uncertainty tools read: `encode`
(q(z|x)), `decode_mean` (E[x|z]), `prior` (p(z)) and `image_shape`. `EncoderDecoderModel`
names what `LikelihoodEstimator.from_model` reads: the `encoder` and `decoder` networks, the
`prior` and `image_shape`. `tfpvae.VAE` has both; so can a researcher's own model, which
then works with those tools unchanged. `encode_in_chunks` is the one way the tools encode
many images with bounded memory.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, Protocol, runtime_checkable

import numpy as np

# Images per encoder call when a tool encodes a whole array: about 1024 * latent_dim**2
# floats of Cholesky factors at a time, so peak memory stays flat in the number of images.
ENCODE_CHUNK = 1024


@runtime_checkable
class LatentModel(Protocol):
    """A model with an encoder q(z|x), a decoder mean E[x|z] and a prior p(z).

    Attributes:
      image_shape: (height, width, channels) of the images it takes.
      prior: p(z), a TFP distribution with event shape (latent_dim,).
    """

    @property
    def image_shape(self) -> tuple[int, int, int]: ...

    @property
    def prior(self) -> Any: ...

    def encode(self, x: Any) -> Any:
        """q(z|x) for images (n, H, W, C): a TFP distribution, batch (n,), event (latent_dim,)."""
        ...

    def decode_mean(self, z: Any) -> np.ndarray:
        """E[x|z] for codes (n, latent_dim): float32 array (n, H, W, C) in [0, 1]."""
        ...


@runtime_checkable
class EncoderDecoderModel(Protocol):
    """What `LikelihoodEstimator.from_model` reads from a model; a `tfpvae.VAE` has all of it.

    When the model also has a `config`, its `architecture` picks the default chunk size
    (`default_batch_elements`) and `model_type="ae"` marks a plain autoencoder, which
    defines no likelihood.

    Attributes:
      encoder: called as `encoder(x, training=False)`: images, float32 (n, H, W, C) ->
        q(z|x), a distribution with batch shape (n,) and event shape (d,).
      decoder: called as `decoder(z, training=False)`: codes, float32 (m, d) -> p(x|z),
        batch shape (m,) and event shape (H, W, C).
      prior: p(z), event shape (d,); read afresh on every call (a VampPrior moves with
        the encoder's weights).
      image_shape: (H, W, C) of the images the model takes.
    """

    @property
    def encoder(self) -> Callable[..., Any]: ...
    @property
    def decoder(self) -> Callable[..., Any]: ...
    @property
    def prior(self) -> Any: ...
    @property
    def image_shape(self) -> tuple[int, int, int]: ...


def latent_dim(model: LatentModel) -> int:
    """The size of the model's latent codes, read off its prior's event shape."""
    return int(model.prior.event_shape[-1])


def encode_in_chunks(model: LatentModel, x: np.ndarray, chunk: int = ENCODE_CHUNK) -> Iterator[Any]:
    """Yields q(z|x) for consecutive slices of at most `chunk` images of `x`.

    Args:
      model: a `LatentModel`.
      x: validated images, array of shape (n, H, W, C).
      chunk: images per encoder call, int >= 1. `ENCODE_CHUNK`: 1024.
    """
    for start in range(0, len(x), chunk):
        yield model.encode(x[start : start + chunk])
