"""Names kept for one release after they moved, each warning where it is used.

Version 0.2 made the latent-space walks and uncertainty maps functions of
`tfpvae.latent` and `tfpvae.uncertainty` (they take any model with `encode`,
`decode_mean`, `prior` and `image_shape`), and moved building a model from a folder to
`tfpvae.model.load`. The old spellings below still work in 0.2, warn with
`FutureWarning` naming the new one, and go in 0.3. This module sits on the top floor
(the package root imports it) because the aliases reach up from the model to the tools
that use it; nothing else may import it.
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable
from typing import Any

from tfpvae import latent, uncertainty
from tfpvae.model import VAE

REMOVED_IN = "0.3"


def _warn(old: str, new: str) -> None:
    warnings.warn(
        f"{old} is deprecated and will be removed in tfpvae {REMOVED_IN}; use {new} instead.",
        FutureWarning,
        stacklevel=3,
    )


def _method_alias(name: str, function: Callable[..., Any], new: str) -> Callable[..., Any]:
    """A VAE method `name` that warns and calls `function(self, ...)`."""

    @functools.wraps(function)
    def method(self, *args: Any, **kwargs: Any) -> Any:
        _warn(f"VAE.{name}", new)
        return function(self, *args, **kwargs)

    method.__name__ = name
    method.__doc__ = f"Deprecated: use `{new}`."
    return method


_METHODS = {
    "interpolate": (latent.interpolate, "tfpvae.latent.interpolate(model, ...)"),
    "traverse": (latent.traverse, "tfpvae.latent.traverse(model, ...)"),
    "manifold_grid": (latent.manifold_grid, "tfpvae.latent.manifold_grid(model, ...)"),
    "embed": (latent.embed_latents, "tfpvae.latent.embed_latents(model, ...)"),
    "posterior_uncertainty": (uncertainty.posterior_uncertainty, "tfpvae.uncertainty.posterior_uncertainty(model, x)"),
    "predictive_uncertainty": (
        uncertainty.predictive_uncertainty,
        "tfpvae.uncertainty.predictive_uncertainty(model, x, ...)",
    ),
}


def _fit_aggregate_posterior(self: VAE, x: Any, num_components: int = 10, seed: int | None = None) -> Any:
    _warn("VAE.fit_aggregate_posterior", "tfpvae.latent.fit_aggregate_posterior(model, x)")
    gmm = latent.fit_aggregate_posterior(self, x, num_components=num_components, seed=seed)
    object.__setattr__(self, "aggregate_posterior_", gmm)  # what `sample(source="aggregate")` reads
    return gmm


_sample = VAE.sample


@functools.wraps(_sample)
def _sample_with_source(self: VAE, num_samples: int, *args: Any, source: str = "prior", **kwargs: Any) -> Any:
    if source == "prior":
        return _sample(self, num_samples, *args, **kwargs)
    if source != "aggregate":
        raise ValueError(f"`source` must be one of 'prior', 'aggregate'; got {source!r}.")
    _warn("VAE.sample(source='aggregate')", "tfpvae.latent.sample_aggregate_posterior(model, gmm, num_samples)")
    gmm = getattr(self, "aggregate_posterior_", None)
    if gmm is None:
        raise ValueError("`source='aggregate'` needs fit_aggregate_posterior(x_train) first.")
    kwargs.pop("temperature", None)
    return latent.sample_aggregate_posterior(self, gmm, num_samples, **kwargs)


def install() -> None:
    """Puts the deprecated aliases on `VAE` (called once by the package root)."""
    for name, (function, new) in _METHODS.items():
        setattr(VAE, name, _method_alias(name, function, new))
    VAE.fit_aggregate_posterior = _fit_aggregate_posterior
    VAE.sample = _sample_with_source
