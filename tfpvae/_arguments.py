"""Command-line argument parsing shared by `tfpvae` and `python -m tfpvae.beam`.

Argument types that name what they expect, a parser whose usage errors are one line,
`UsageError` for the mistakes a command finds after parsing, and the model flags,
generated from `VAEConfig`'s fields so that the CLI, the benchmarks and Python agree.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tfpvae._validation import MAX_INT32_SEED
from tfpvae.config import CHOICES, PRECISIONS, REGISTERED, VAEConfig


class UsageError(ValueError):
    """A mistake in how a command was called (a flag, a path, a combination of flags).

    The command line prints its message as one line and exits with status 2; every other
    exception is a bug or an environment problem and keeps its traceback.
    """


def arg_type(convert: Callable[[str], Any], ok: Callable[[Any], bool], name: str) -> Callable[[str], Any]:
    """An argparse type: `convert(text)` where `ok` accepts it, else an error naming `name`.

    `name` (e.g. "integer >= 1") is also how argparse and the CLI reference show the type.
    """
    article = "an" if name[0] in "aeiou" else "a"

    def parse(text: str):
        try:
            value = convert(text)
        except ValueError:
            value = None
        if value is None or not ok(value):
            raise argparse.ArgumentTypeError(f"expected {article} {name}, got {text!r}")
        return value

    parse.__name__ = name
    return parse


def int_at_least(minimum: int) -> Callable[[str], int]:
    """An integer >= `minimum`."""
    return arg_type(int, lambda v: v >= minimum, f"integer >= {minimum}")


positive_int, non_negative_int = int_at_least(1), int_at_least(0)
# Seeds reach TensorFlow's stateless ops, which take int32.
seed = arg_type(int, lambda v: 0 <= v <= MAX_INT32_SEED, f"integer in [0, {MAX_INT32_SEED}]")
finite = arg_type(float, math.isfinite, "finite number")  # no nan or inf


def float_in(low: float, high: float = float("inf")) -> Callable[[str], float]:
    """A number in the open interval (low, high)."""
    name = f"number > {low}" if high == float("inf") else f"number in ({low}, {high})"
    return arg_type(float, lambda v: low < v < high, name)


def file_ending(*suffixes: str) -> Callable[[str], str]:
    """A file name ending in one of `suffixes`, checked before any work."""
    return arg_type(str, lambda v: Path(v).suffix.lower() in suffixes, f"file name ending in {' or '.join(suffixes)}")


class Parser(argparse.ArgumentParser):
    """argparse, except that a usage error is one line, as every other user error of the CLI."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        # No abbreviated flags: `--resume` must see which flags were typed (to note the ignored ones).
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see `{self.prog} --help`)\n")


# Fields whose flag is not their name: `options` is given one KEY=VALUE at a time.
_FLAG_NAMES = {"options": "--option"}


def flag(key: str) -> str:
    """The flag of a field or argument name: "latent_dim" -> "--latent-dim", "options" -> "--option"."""
    return _FLAG_NAMES.get(key) or "--" + key.replace("_", "-")


def _config_field_type(field: dataclasses.Field) -> Callable[[str], Any]:
    """An argparse type for one `VAEConfig` field, checked by the config's own validation."""
    convert = {"int": int, "float": float}[field.type]
    defaults = VAEConfig()

    def check(value: Any) -> None:
        dataclasses.replace(defaults, **{field.name: value})

    # The type's name comes from the validation's own words for a value far out of range
    # ("an int >= 1" -> "integer >= 1"), so the help cannot drift from the rule.
    try:
        check(convert(-(10**9)))
        kind = "integer" if convert is int else "number"
    except (ValueError, TypeError) as err:
        found = re.search(r"must be an? (.*?); got", str(err))
        kind = found.group(1).replace("finite number", "number") if found else "value"
        kind = re.sub(r"^int\b", "integer", kind)
    article = "an" if kind[0] in "aeiou" else "a"

    def parse(text: str):
        try:
            value = convert(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {article} {kind}, got {text!r}") from None
        try:
            check(value)
        except (ValueError, TypeError):
            raise argparse.ArgumentTypeError(f"expected {article} {kind}, got {text!r}") from None
        return value

    parse.__name__ = kind
    return parse


# Fields that are not flags of their own: the image shape comes from the data, the seed is
# the run's --seed (initialisation, shuffling and binarisation together), and the options
# are given one by one with --option KEY=VALUE.
_NOT_FLAGS = ("input_shape", "seed", "options")


def config_fields() -> list[dataclasses.Field]:
    """The `VAEConfig` fields that are command-line flags, in the dataclass's order."""
    return [f for f in dataclasses.fields(VAEConfig) if f.name not in _NOT_FLAGS]


def add_config_flags(parser: argparse.ArgumentParser, defaults: VAEConfig | None = None) -> None:
    """Adds one flag per `VAEConfig` field (--latent-dim, --prior, ...), defaulting to `defaults`.

    Args:
      parser: the parser (or argument group) to add them to.
      defaults: the config whose values are the defaults. Default `VAEConfig()`.
    """
    defaults = VAEConfig() if defaults is None else defaults
    for field in config_fields():
        default = getattr(defaults, field.name)
        if field.name in REGISTERED:  # the built-in names and those registered by --import'ed modules
            kind: dict[str, Any] = {"choices": REGISTERED[field.name].names()}
        elif field.name in CHOICES:
            kind = {"choices": CHOICES[field.name]}
        else:
            kind = {"type": _config_field_type(field)}
        if "metavar" in field.metadata:
            kind["metavar"] = field.metadata["metavar"]
        help_text = f"{field.metadata['help']} (default {default})".replace("%", "%%")
        parser.add_argument(flag(field.name), default=default, help=help_text, **kind)
    parser.add_argument(
        flag("options"),
        dest="options",
        type=option,
        action="append",
        default=None,
        metavar="KEY=VALUE",
        help="a setting for a registered network's or prior's builder, VALUE as JSON or text "
        "(VAEConfig.options; repeatable)",
    )


def _option(text: str) -> tuple[str, Any]:
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise ValueError(text)
    try:
        parsed = json.loads(value)
    except ValueError:
        parsed = value  # plain text: --option norm=batch
    return key.strip(), parsed


def _finite(pair: tuple[str, Any]) -> bool:
    # NaN and infinities (NaN, Infinity, 1e999), anywhere in VALUE: JSON, and so a saved
    # config, cannot hold them.
    try:
        json.dumps(pair[1], allow_nan=False)
    except ValueError:
        return False
    return True


option = arg_type(_option, _finite, "KEY=VALUE pair with finite numbers")


def config_from_args(args: argparse.Namespace, **fields: Any) -> VAEConfig:
    """The `VAEConfig` of the parsed config flags, with `fields` (e.g. input_shape, seed) added."""
    options = dict(getattr(args, "options", None) or [])
    return VAEConfig(**{f.name: getattr(args, f.name) for f in config_fields()}, options=options, **fields)


def add_precision_arg(p: argparse.ArgumentParser, what: str = "scoring") -> None:
    """--precision {float32,bfloat16,auto}."""
    p.add_argument(
        "--precision",
        choices=PRECISIONS,
        default="float32",
        help=f"network arithmetic for {what}: bfloat16 matrix products (heads and sums stay float32); "
        "auto picks bfloat16 on hardware with native bfloat16 units (default float32)",
    )
