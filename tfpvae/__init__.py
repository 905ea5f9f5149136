"""tfpvae: variational autoencoders built from TensorFlow Probability layers.

Public API: `VAE`, `VAEConfig`, `load`, `save`, `train`, `AnomalyDetector`,
`LikelihoodEstimator`, `register_network` and `register_prior` (a model from your own
networks and priors), the errors, and the modules (`datasets`, `streaming`, `scoring`,
`latent`, `uncertainty`, `plots`, ...). Names are resolved on first use, so `import tfpvae` (and `tfpvae --help`)
does not pay TensorFlow's start-up cost until a model is needed.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from tfpvae._version import __version__

_EXPORTS = {
    "VAE": "tfpvae.model",
    "VAEConfig": "tfpvae.config",
    "load": "tfpvae.model",
    "save": "tfpvae.model",
    "ModelFormatError": "tfpvae.serialization",
    "DatasetNotFoundError": "tfpvae.datasets",
    "AnomalyDetector": "tfpvae.anomaly",
    "LikelihoodEstimator": "tfpvae.likelihood",
    "train": "tfpvae.training",
    "register_network": "tfpvae.registry",
    "register_prior": "tfpvae.registry",
    "TrainingDivergedError": "tfpvae.training",
    "StorageError": "tfpvae._io",
    "OutputExistsError": "tfpvae.write_guard",
    "FolderInUseError": "tfpvae.write_guard",
}
_SUBMODULES = (
    "anomaly",
    "anomaly_maps",
    "anomaly_scores",
    "batch_tests",
    "charts",
    "combined",
    "config",
    "datasets",
    "embedding",
    "evolution",
    "figures",
    "latent",
    "likelihood",
    "metrics",
    "model",
    "networks",
    "plots",
    "priors",
    "protocols",
    "registry",
    "runs",
    "schedules",
    "scoring",
    "serialization",
    "streaming",
    "subsets",
    "training",
    "uncertainty",
    "write_guard",
)

__all__ = [
    "AnomalyDetector",
    "LikelihoodEstimator",
    "TrainingDivergedError",
    "train",
    "VAE",
    "VAEConfig",
    "DatasetNotFoundError",
    "ModelFormatError",
    "StorageError",
    "OutputExistsError",
    "FolderInUseError",
    "datasets",
    "register_network",
    "register_prior",
    "load",
    "save",
    "__version__",
]

if TYPE_CHECKING:
    from tfpvae import datasets
    from tfpvae._io import StorageError
    from tfpvae.anomaly import AnomalyDetector
    from tfpvae.config import VAEConfig
    from tfpvae.datasets import DatasetNotFoundError
    from tfpvae.likelihood import LikelihoodEstimator
    from tfpvae.model import VAE, load, save
    from tfpvae.registry import register_network, register_prior
    from tfpvae.serialization import ModelFormatError
    from tfpvae.training import TrainingDivergedError, train
    from tfpvae.write_guard import FolderInUseError, OutputExistsError


# Names whose first use also installs the deprecated VAE method aliases (`tfpvae._deprecated`).
_MODEL_NAMES = ("VAE", "load", "model", "latent", "uncertainty")


def __getattr__(name: str) -> Any:
    if name in _MODEL_NAMES:
        from tfpvae import _deprecated

        _deprecated.install()
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
