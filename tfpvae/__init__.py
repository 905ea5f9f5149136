"""tfpvae: variational autoencoders built from TensorFlow Probability layers.

Public API: `VAE`, `VAEConfig`, `load`, `save`, `ModelFormatError` and the `datasets`
module. Names are resolved on first use, so `import tfpvae` (and `tfpvae --help`) does not
pay TensorFlow's start-up cost until a model is needed.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_EXPORTS = {
    "VAE": "tfpvae.model",
    "VAEConfig": "tfpvae.config",
    "load": "tfpvae.serialization",
    "save": "tfpvae.serialization",
    "ModelFormatError": "tfpvae.serialization",
    "DatasetNotFoundError": "tfpvae.datasets",
}
_SUBMODULES = ("datasets", "plots", "priors", "networks", "config", "model", "serialization")

__all__ = [
    "VAE",
    "VAEConfig",
    "DatasetNotFoundError",
    "ModelFormatError",
    "datasets",
    "load",
    "save",
    "__version__",
]

if TYPE_CHECKING:
    from tfpvae import datasets
    from tfpvae.config import VAEConfig
    from tfpvae.datasets import DatasetNotFoundError
    from tfpvae.model import VAE
    from tfpvae.serialization import ModelFormatError, load, save


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
    elif name in _SUBMODULES:
        value = importlib.import_module(f"tfpvae.{name}")
    else:
        raise AttributeError(f"module 'tfpvae' has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS, *_SUBMODULES])
