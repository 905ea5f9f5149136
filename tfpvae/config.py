"""VAEConfig: every hyperparameter of a model, named, validated and JSON-serialisable."""

from __future__ import annotations

import dataclasses
import functools
import json
from typing import Any

from tfpvae import registry
from tfpvae._validation import (
    MAX_INT32_SEED,
    check_choice,
    check_float,
    check_int,
    check_seed,
    check_shape,
    show,
)

# The built-in names; `tfpvae.registry` holds these and the ones users register.
PRIORS = registry.BUILTIN_PRIORS
ARCHITECTURES = registry.BUILTIN_NETWORKS
MODEL_TYPES = ("vae", "ae")
# The built-in priors with trainable weights, which only a VAE's KL term trains (model_type
# "ae" refuses them; a registered prior with trainable weights is refused when it is built).
TRAINABLE_PRIORS = ("learned_normal", "mixture", "vamp", "flow")
BINARIZE = ("dynamic", "none")
ACTIVATIONS = ("relu", "elu", "swish", "leaky_relu", "tanh")
# Learning-rate schedules of `tfpvae.schedules` (here, free of TensorFlow, for the CLI's parser).
LR_SCHEDULES = ("constant", "linear", "cosine", "exponential")
# The per-image scores of `tfpvae.scoring` (here, free of TensorFlow, for the CLI's parser).
SCORES = ("log_prob", "elbo", "rate", "distortion", "typicality", "complexity")
# The arithmetic of `tfpvae.precision` (here, free of TensorFlow, for the CLI's parser).
PRECISIONS = ("float32", "bfloat16", "auto")
# The distribution strategies of `tfpvae.distribute` (here, free of TensorFlow, for the CLI's parser).
STRATEGIES = ("default", "mirrored", "multiworker")
# The figures of `tfpvae.figures` (here, free of TensorFlow, for the CLI's parser).
FIGURES = (
    "samples",
    "aggregate-samples",
    "reconstructions",
    "interpolation",
    "traversal",
    "manifold",
    "scatter",
    "uncertainty",
    "pixel-likelihood",
    "anomaly-map",
    "curves",
    "pseudo-inputs",
    "histogram",
    "roc",
)
# The floor that the decaying schedules reach at the last epoch, as a fraction of the
# initial learning rate: small enough to settle the weights, large enough that the last
# epochs still learn.
DEFAULT_MIN_LR_FRACTION = 0.05
# The epochs of a run that only its time budget ends (`tfpvae train --time-budget` without
# `--epochs`); `tfpvae.schedules.BudgetProgress` shows no epoch total for it.
UNLIMITED_EPOCHS = 1_000_000
# The fields that take one of a few fixed names, with the names (the CLI's flags offer them
# as choices). `architecture` and `prior` take registered names: see `REGISTERED`.
CHOICES = {
    "model_type": MODEL_TYPES,
    "activation": ACTIVATIONS,
    "binarize": BINARIZE,
}
# The fields whose value is a name in a registry of builders.
REGISTERED = {"architecture": registry.networks, "prior": registry.priors}
# How deeply `options` may nest lists and dicts: far more than a builder's settings need, few
# enough that copying a config (dataclasses.asdict recurses) stays clear of the recursion limit.
_MAX_OPTIONS_DEPTH = 32


@dataclasses.dataclass(frozen=True)
class VAEConfig:
    """All hyperparameters of a `tfpvae.VAE`; defaults suit 28x28 grey images.

    Every field is checked when the config is made, and NumPy numbers are stored as the
    Python int or float they equal, so a config always converts to JSON.

    Attributes:
      input_shape: (height, width, channels) of the images. Default (28, 28, 1), MNIST.
      latent_dim: dimension of z. Default 16: enough for MNIST's likelihood without the
        inactive units that larger sizes leave (and, measured, faster to train than 32).
      architecture: encoder/decoder family: "mlp" (default), "conv", "dcgan", or a name
        registered with `tfpvae.register_network`.
        "mlp" (784-512-256 encoder, 256-512-784 decoder for the default hidden_units) was
        chosen by measurement: on CPUs it trains and scores several times faster than
        "conv", so it reaches a lower NLL within a fixed time budget (figures: the
        Benchmarks page, "How the default was chosen").
      prior: "normal" (fixed N(0, I), exact KL), "learned_normal" (trainable loc and
        scale_tril, exact KL), "mixture" (learned Gaussian mixture, Monte Carlo KL) or
        "vamp" (VampPrior: the mixture of the encoder's posteriors of learned
        pseudo-images, Monte Carlo KL; each step also encodes the pseudo-images), "flow"
        (a masked autoregressive flow over N(0, I), Monte Carlo KL), or a name registered
        with `tfpvae.register_prior`.
      num_components: mixture components ("mixture") or pseudo-images ("vamp"). Default
        10, one per MNIST class; unused by the other priors. The VampPrior paper uses 500.
      flow_layers: masked autoregressive transforms of prior="flow". Default 4.
      flow_hidden_units: width of the two hidden layers of each transform's MADE network
        (prior="flow"). Default 128.
      beta: weight of the KL term in the loss (1.0 gives the ELBO). Default 1.0.
      model_type: "vae" (default) or "ae", a plain autoencoder with a deterministic
        bottleneck and the same networks, for comparing latent spaces. An autoencoder's
        loss has no KL term, so nothing would train a prior's weights: "ae" takes only a
        fixed prior, "normal" or a registered one without trainable weights (the
        built-in trainable priors are refused here, a registered one when the model
        builds it, by `tfpvae.priors.build_prior`).
      filters: channels of the first conv block; later blocks double it. Default 32.
      hidden_units: width of the dense layers (the "mlp" bodies also have one layer of
        twice this width). Default 256.
      activation: hidden activation. Default "swish" (smooth, trains faster than relu here).
      dropout: fraction of each hidden dense layer's units dropped at every training step,
        in [0, 1). Default 0.0 (none). Regularises models that overfit, such as MLPs on a
        fixed binarisation (static binarized MNIST); the mask is applied only in training,
        so scores, samples and reconstructions use the whole network.
      binarize: "dynamic" (default) draws binary images x_b ~ Bernoulli(x) at every training
        step, the standard protocol for Bernoulli likelihoods on grey MNIST; "none" trains on
        the grey values (the loss is then the cross-entropy with grey targets).
      learning_rate: Adam step size used by `compile()` without an optimizer. Default 2e-3:
        of the rates measured with the "mlp" default at batch 128 it gave the lowest IWAE NLL
        after a fixed time budget (Benchmarks page, "How the default was chosen").
      posterior_scale_floor: lower bound added to the posterior's scale_tril diagonal.
        Default 1e-5, TFP's value; a larger floor (1e-3) guards against divergence.
      train_samples: importance samples k per image in the training loss. Default 1: the
        ELBO, -log p(x|z) + beta * KL with the KL in closed form where one exists. k > 1
        trains on the importance-weighted bound (IWAE, Burda et al. 2016),
        log (1/k) sum_j p(x|z_j) p(z_j) / q(z_j|x) with z_1..z_k ~ q(z|x), which is tighter
        than the ELBO and usually gives a better test log-likelihood, at about k times the
        decoder cost per step. With `beta` != 1 (or a KL warm-up) each log-weight is
        log p(x|z) + beta * (log p(z) - log q(z|x)). Needs model_type "vae".
      seed: seed for weight initialisation and the prior's initial values, an int in
        [0, 2^31 - 1] as every seed of tfpvae; None (default) draws one.
      options: settings for a registered network's or prior's builder, a dict of JSON
        values with string keys (e.g. {"blocks": 3}), saved with the config. Default {}.
        The built-in builders ignore it.
    """

    input_shape: tuple[int, int, int] = (28, 28, 1)
    latent_dim: int = dataclasses.field(default=16, metadata={"help": "latent dimension"})
    architecture: str = dataclasses.field(default="mlp", metadata={"help": "network family"})
    prior: str = dataclasses.field(default="normal", metadata={"help": "prior kind"})
    num_components: int = dataclasses.field(default=10, metadata={"help": "mixture components"})
    flow_layers: int = dataclasses.field(default=4, metadata={"help": "transforms of the flow prior"})
    flow_hidden_units: int = dataclasses.field(
        default=128, metadata={"help": "hidden width of each transform of the flow prior"}
    )
    beta: float = dataclasses.field(default=1.0, metadata={"help": "KL weight"})
    model_type: str = dataclasses.field(default="vae", metadata={"help": "vae or plain autoencoder"})
    filters: int = dataclasses.field(default=32, metadata={"help": "channels of the first conv block"})
    hidden_units: int = dataclasses.field(default=256, metadata={"help": "width of the dense layers"})
    activation: str = dataclasses.field(default="swish", metadata={"help": "hidden activation"})
    dropout: float = dataclasses.field(
        default=0.0, metadata={"help": "fraction of hidden dense units dropped in training"}
    )
    binarize: str = dataclasses.field(default="dynamic", metadata={"help": "training binarisation"})
    learning_rate: float = dataclasses.field(default=2e-3, metadata={"help": "Adam step size"})
    posterior_scale_floor: float = dataclasses.field(default=1e-5, metadata={"help": "minimum posterior std"})
    train_samples: int = dataclasses.field(
        default=1,
        metadata={
            "help": "importance samples per image in the training loss: 1 trains on the ELBO, "
            "K > 1 on the tighter IWAE bound (K decoder passes per image)",
            "metavar": "K",
        },
    )
    seed: int | None = None
    options: dict[str, Any] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        # Each check's converted value is stored, not only checked: a NumPy number (np.int64
        # latent_dim, np.float32 beta) would otherwise stay in the config, which JSON (and so
        # saving and hash()) cannot hold, and an int beta would hash unlike the equal float.
        store = functools.partial(object.__setattr__, self)
        store("input_shape", check_shape(self.input_shape, "input_shape"))
        for name, names in CHOICES.items():
            check_choice(getattr(self, name), name, names)
        for name, names in REGISTERED.items():
            names.check(getattr(self, name))
        store("options", _check_options(self.options))
        for name in ("latent_dim", "num_components", "flow_layers", "flow_hidden_units"):
            store(name, check_int(getattr(self, name), name))
        store("beta", check_float(self.beta, "beta", minimum=0.0))
        store("filters", check_int(self.filters, "filters"))
        store("hidden_units", check_int(self.hidden_units, "hidden_units"))
        store("dropout", check_float(self.dropout, "dropout", minimum=0.0, maximum=1.0, max_inclusive=False))
        store("learning_rate", check_float(self.learning_rate, "learning_rate", minimum=0.0, min_inclusive=False))
        store("posterior_scale_floor", check_float(self.posterior_scale_floor, "posterior_scale_floor", minimum=0.0))
        store("train_samples", check_int(self.train_samples, "train_samples"))
        if self.train_samples > 1 and self.model_type != "vae":
            # A point-mass code has no density to weight samples by, and every draw is the same.
            raise ValueError(f"`train_samples` > 1 needs model_type='vae'; got model_type={self.model_type!r}.")
        if self.prior == "vamp" and self.model_type != "vae":
            # The VampPrior is a mixture of q(z|u); a point-mass code has no such density.
            raise ValueError(f"`prior='vamp'` needs model_type='vae'; got model_type={self.model_type!r}.")
        if self.prior in TRAINABLE_PRIORS and self.model_type != "vae":
            # Only the KL term trains a prior, and an autoencoder's loss has none: sample()
            # would draw from the untrained initial prior.
            raise ValueError(
                f"`prior={self.prior!r}` has trainable weights, which model_type={self.model_type!r} never trains "
                "(an autoencoder's loss has no KL term); use prior='normal' (or a fixed registered prior) "
                "or model_type='vae'."
            )
        # Within int32, as every seed of tfpvae: the networks derive per-layer seeds
        # seed * 1000 + index, which a seed past ~9.2e15 overflows deep inside tf_keras.
        store("seed", check_seed(self.seed, "seed", maximum=MAX_INT32_SEED))

    def __hash__(self) -> int:
        # `options` is a dict; the JSON text is the config's whole identity.
        return hash(self.to_json())

    def replace(self, **changes: Any) -> VAEConfig:
        """Returns a copy with `changes` applied; unknown names raise `TypeError`."""
        unknown = set(changes) - {f.name for f in dataclasses.fields(self)}
        if unknown:
            raise TypeError(f"Unknown config field(s) {sorted(unknown)}; valid fields are {sorted(self.to_dict())}.")
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """Returns the config as a dict of JSON-compatible values."""
        d = dataclasses.asdict(self)
        d["input_shape"] = list(self.input_shape)
        d["options"] = json.loads(json.dumps(self.options))
        return d

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> VAEConfig:
        """Builds a config from `to_dict()` output.

        Raises:
          TypeError, ValueError: `data` is not a dict of field names, names an unknown field,
            or a field's value is invalid; the message names the field. `UnregisteredNameError`
            (a ValueError) for an `architecture` or `prior` no imported module registers.
        """
        if not isinstance(data, dict):
            raise TypeError(f"`data` must be a dict; got {type(data).__name__}.")
        bad_keys = [k for k in data if not isinstance(k, str)]
        if bad_keys:
            raise TypeError(f"`data` keys must be config field names (str); got {show(bad_keys[:3])}.")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"Unknown config field(s) {sorted(unknown)}; valid fields are {sorted(known)}.")
        data = dict(data)
        if "input_shape" in data and isinstance(data["input_shape"], list):
            data["input_shape"] = tuple(data["input_shape"])
        return cls(**data)

    def to_json(self) -> str:
        """Returns the config as a JSON string."""
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> VAEConfig:
        """Inverse of `to_json`.

        Raises:
          TypeError, ValueError: `text` is not JSON of a config object; as `from_dict` for its fields.
        """
        if not isinstance(text, (str, bytes, bytearray)):
            raise TypeError(f"`text` must be JSON text (str); got {type(text).__name__}.")
        try:
            data = json.loads(text)
        except (ValueError, RecursionError) as err:  # bad JSON or UTF-8, a huge number, deep nesting
            detail = "it is nested too deeply" if isinstance(err, RecursionError) else err
            raise ValueError(f"`text` is not valid JSON: {detail}") from None
        return cls.from_dict(data)


def _depth(value: Any, limit: int) -> int:
    """How many levels of lists and dicts `value` nests, counted up to limit + 1 (a loop: no recursion limit)."""
    deepest, level = 0, [value]
    while deepest <= limit:
        containers = [item for item in level if isinstance(item, (list, tuple, dict))]
        if not containers:
            break
        deepest += 1
        level = [v for item in containers for v in (item.values() if isinstance(item, dict) else item)]
    return deepest


def _check_options(options: Any) -> dict[str, Any]:
    """A copy of `options` if it is a dict of JSON values with string keys (what a config file can hold)."""
    if not isinstance(options, dict):
        raise TypeError(f"`options` must be a dict of JSON values; got {type(options).__name__}.")
    bad_keys = [k for k in options if not isinstance(k, str)]
    if bad_keys:
        raise TypeError(f"`options` keys must be strings; got {show(bad_keys[:3])}.")
    if _depth(options, _MAX_OPTIONS_DEPTH) > _MAX_OPTIONS_DEPTH:
        # Deeper values would break the recursive copies and comparisons of a config.
        raise ValueError(f"`options` nests lists and dicts more than {_MAX_OPTIONS_DEPTH} levels deep.")
    try:
        # The round trip is the check: a value JSON cannot hold fails, and tuples become lists,
        # so a config equals the config it is reloaded as.
        return json.loads(json.dumps(options, allow_nan=False))
    except (TypeError, ValueError) as err:
        raise TypeError(
            f"`options` must hold only JSON values (str, finite numbers, bool, None, lists, dicts): {err}"
        ) from None
