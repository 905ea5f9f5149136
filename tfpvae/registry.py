"""The registries of network and prior builders: the names `VAEConfig.architecture` and `VAEConfig.prior` select.

A model is saved as its config (names and numbers) plus its weights, and rebuilt by
looking its names up here, so a researcher's own network or prior is saved and loaded
as safely as a built-in one: nothing is pickled, and a name that no imported module
has registered fails with one line that says which import is missing.

The built-in names are known here without TensorFlow (the command line's `--help` lists
them); their builders are registered by `tfpvae.networks` and `tfpvae.priors`, which
`tfpvae.model` imports before it builds anything.

Examples:
  >>> import tfpvae
  >>> @tfpvae.register_network("tiny")
  ... def tiny(config, role):
  ...     ...  # returns a tf_keras layer for role "encoder" or "decoder"
  >>> "tiny" in tfpvae.registry.networks.names()
  True
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

Builder = TypeVar("Builder", bound=Callable[..., Any])

BUILTIN_NETWORKS = ("mlp", "conv", "dcgan")
BUILTIN_PRIORS = ("normal", "learned_normal", "mixture", "vamp", "flow")
NETWORK_ROLES = ("encoder", "decoder")


class UnregisteredNameError(ValueError):
    """A config names a network or prior that no module imported in this process has registered."""


def _origin(builder: Callable[..., Any]) -> str:
    """Where a builder was defined, to tell a re-run of the same definition from a clash."""
    return f"{getattr(builder, '__module__', '?')}.{getattr(builder, '__qualname__', repr(builder))}"


class Registry:
    """Names -> builder functions for one config field.

    Args:
      kind: what is registered ("network" or "prior"), for messages.
      field: the `VAEConfig` field whose value is a name here ("architecture" or "prior").
      decorator: the public decorator's name, for messages ("register_network").
      builtins: the names tfpvae itself registers; they cannot be replaced.
    """

    def __init__(self, kind: str, field: str, decorator: str, builtins: tuple[str, ...]) -> None:
        self.kind, self.field, self.decorator, self.builtins = kind, field, decorator, builtins
        self._builders: dict[str, Callable[..., Any]] = {}

    def register(self, name: str, *, replace: bool = False, _builtin: bool = False) -> Callable[[Builder], Builder]:
        """A decorator that registers its function under `name` and returns it unchanged.

        Registering the same definition again (a re-run notebook cell, a reloaded module)
        replaces the old one silently; a different function under a taken name needs
        `replace=True`. The built-in names cannot be replaced: saved models rely on them.
        """
        if not isinstance(name, str) or not name.strip() or name != name.strip():
            raise ValueError(f"A {self.kind} name must be a non-empty string without surrounding spaces; got {name!r}.")
        if name in self.builtins and not _builtin:
            raise ValueError(
                f"{self.kind.capitalize()} name {name!r} is built into tfpvae; register under another name."
            )

        def decorate(builder: Builder) -> Builder:
            if not callable(builder):
                raise TypeError(
                    f"`@{self.decorator}({name!r})` must decorate a function; got {type(builder).__name__}."
                )
            old = self._builders.get(name)
            if old is not None and not replace and _origin(old) != _origin(builder):
                raise ValueError(
                    f"{self.kind.capitalize()} {name!r} is already registered by {_origin(old)}; "
                    f"pass replace=True to `{self.decorator}` to replace it."
                )
            self._builders[name] = builder
            return builder

        return decorate

    def names(self) -> tuple[str, ...]:
        """The names a config may use: the built-in ones, then the registered ones in order."""
        return self.builtins + tuple(n for n in self._builders if n not in self.builtins)

    def check(self, name: Any) -> str:
        """Returns `name` if it is a known name; raises `UnregisteredNameError` (or TypeError) otherwise."""
        if not isinstance(name, str):
            raise TypeError(f"`{self.field}` must be a string (a registered {self.kind} name); got {name!r}.")
        if name not in self.names():
            known = ", ".join(map(repr, self.names()))
            raise UnregisteredNameError(
                f"`{self.field}` {name!r} is not a registered {self.kind} in this process (registered: {known}); "
                f"import the module that registers it with @tfpvae.{self.decorator}({name!r}) first "
                "(on the command line: --import MODULE)."
            )
        return name

    def get(self, name: str) -> Callable[..., Any]:
        """The builder registered under `name`."""
        self.check(name)
        if name not in self._builders:
            # A built-in name whose module has not been imported: a bug in tfpvae, not the user's.
            raise RuntimeError(f"Built-in {self.kind} {name!r} is not registered yet: import tfpvae.model first.")
        return self._builders[name]

    def module_of(self, name: str) -> str | None:
        """The module that defined the builder of `name`, or None for built-in or unknown names."""
        if name in self.builtins or name not in self._builders:
            return None
        return getattr(self._builders[name], "__module__", None)

    def unregister(self, name: str) -> None:
        """Removes a registered name (not a built-in one); for tests and interactive work."""
        if name in self.builtins:
            raise ValueError(f"{self.kind.capitalize()} name {name!r} is built into tfpvae and cannot be removed.")
        self._builders.pop(name, None)


networks = Registry("network", "architecture", "register_network", BUILTIN_NETWORKS)
priors = Registry("prior", "prior", "register_prior", BUILTIN_PRIORS)


def register_network(name: str, *, replace: bool = False) -> Callable[[Builder], Builder]:
    """Registers a network builder `fn(config, role)` under `name`, for `VAEConfig(architecture=name)`.

    The builder gets the model's `VAEConfig` (its `input_shape`, `latent_dim`, `options`,
    ...) and a role, "encoder" or "decoder", and returns a `tf_keras` layer or model:

    - "encoder": images (n, H, W, C), float32 in [0, 1], to features (n, F) for any F
      (a feature map (n, h, w, c) is flattened). tfpvae adds the posterior head, a
      `MultivariateNormalTriL` with the KL regularizer (or the autoencoder's code layer).
    - "decoder": codes (n, latent_dim) to Bernoulli logits (n, H, W, C) or (n, H * W * C).
      tfpvae adds the `IndependentBernoulli` head.

    Only the name (and the JSON values in `config.options` the builder reads) is saved;
    a process that loads the model must import the module that registers the name.

    Args:
      name: the architecture name; not one of the built-in "mlp", "conv", "dcgan".
      replace: allow replacing a different function registered under `name`.
        False: re-registering the same definition, as a re-run notebook cell does, is
        always allowed.

    Returns:
      A decorator that registers the function and returns it unchanged.

    Examples:
      >>> import tfpvae
      >>> from tfpvae._keras import tfk, tfkl
      >>> @tfpvae.register_network("small_mlp")
      ... def small_mlp(config, role):
      ...     hidden = tfkl.Dense(64, activation="relu")
      ...     if role == "encoder":
      ...         return tfk.Sequential([tfkl.Flatten(), hidden])
      ...     h, w, c = config.input_shape
      ...     return tfk.Sequential([hidden, tfkl.Dense(h * w * c)])
      >>> model = tfpvae.VAE(
      ...     input_shape=(8, 8, 1), latent_dim=2, architecture="small_mlp"
      ... )
      >>> model.sample(3).shape
      (3, 8, 8, 1)
    """
    return networks.register(name, replace=replace)


def register_prior(name: str, *, replace: bool = False) -> Callable[[Builder], Builder]:
    """Registers a prior builder `fn(config)` under `name`, for `VAEConfig(prior=name)`.

    The builder returns a `tf_keras` layer that owns the prior's variables (so the model
    trains, saves and restores them) and has a `distribution` attribute or property: a
    `tfd.Distribution` with batch shape () and event shape (latent_dim,), read afresh
    each time so it sees the current variables. Subclassing `tfpvae.priors.PriorLayer`
    gives the rest. Optional attributes: `exact_kl` (bool; by default, whether TFP has a
    closed-form KL from `MultivariateNormalTriL` to the distribution: exact KL then,
    Monte Carlo otherwise) and `attach_posterior(fn)` for a prior made from the encoder
    (the VampPrior), which the model calls with images -> q(z|x).

    Args:
      name: the prior name; not one of the built-in ones ("normal", "learned_normal",
        "mixture", "vamp", "flow").
      replace: allow replacing a different function registered under `name`.

    Returns:
      A decorator that registers the function and returns it unchanged.

    Examples:
      >>> import tfpvae
      >>> from tfpvae._keras import tf, tfd
      >>> @tfpvae.register_prior("wide_normal")
      ... def wide_normal(config):
      ...     d = config.latent_dim
      ...     normal = tfd.MultivariateNormalDiag(tf.zeros(d), 2.0 * tf.ones(d))
      ...     return tfpvae.priors.FixedPrior(normal)
      >>> model = tfpvae.VAE(input_shape=(8, 8, 1), latent_dim=2, prior="wide_normal")
      >>> model.prior.stddev().numpy()
      array([2., 2.], dtype=float32)
    """
    return priors.register(name, replace=replace)


def import_modules(modules: Sequence[str], argument: str = "imports") -> None:
    """Imports the modules that register a user's networks and priors, named by the user.

    A dotted name is imported as Python imports it (installed, on `PYTHONPATH`, or in the
    current folder, as `python -m` finds it); a path ending in ".py" is imported from that
    file under its stem's name. Only what the user names is imported: a model folder never
    names code to run. The command line's `--import` and the Beam workers use this.

    Args:
      modules: dotted module names or .py file paths.
      argument: how messages name the argument (e.g. "--import").

    Raises:
      ValueError: a named module or file does not exist. An error raised while the module
        itself runs (a bug in it, a missing dependency of its own) passes through unchanged.
    """
    if isinstance(modules, str):
        raise TypeError(f"`{argument}` must be a list of module names; got the string {modules!r}.")
    for name in modules:
        if not isinstance(name, str) or not name:
            raise TypeError(f"`{argument}` must hold module names or .py paths; got {name!r}.")
        if name.endswith(".py"):
            path = Path(name)
            if not path.is_file():
                raise ValueError(f"`{argument} {name}`: no such file.")
            spec = importlib.util.spec_from_file_location(path.stem, path)
            module = importlib.util.module_from_spec(spec)
            sys.modules[path.stem] = module
            spec.loader.exec_module(module)
            continue
        if "" not in sys.path and str(Path.cwd()) not in sys.path:
            sys.path.insert(0, str(Path.cwd()))
        try:
            importlib.import_module(name)
        except ModuleNotFoundError as err:
            if err.name is None or not name.startswith(err.name):
                raise  # the module exists and one of its own imports failed: keep the traceback
            raise ValueError(
                f"`{argument} {name}`: no module named {err.name!r} (install it, add its folder to PYTHONPATH, "
                "or give the path of a .py file)."
            ) from None
