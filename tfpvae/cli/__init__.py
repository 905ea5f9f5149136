"""The `tfpvae` command line: one module per command group, each parsing its flags and calling the library.

`train` (train.py); `evaluate`, `score` and `detect` (score.py); `sample`, `info`, `plot`,
`interpolate` and `export` (outputs.py). A user's mistake (a bad flag, a missing file, a
corrupt model, images of the wrong shape, an output that exists, a folder in use) and a
file system that refuses (no space left, permission denied, read-only) print one line to
stderr and exit with status 2; any other exception is a bug and keeps its traceback.
TensorFlow is imported only after the arguments parse, so `--help` is instant (unless an
`--import`ed module, which may register networks and priors, imports it first).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from tfpvae._arguments import Parser, UsageError
from tfpvae.cli import outputs, score, train
from tfpvae.cli._common import add_import_arg, import_modules, refused
from tfpvae.write_guard import OutputExistsError

# The commands in the order `tfpvae --help` lists them: train, look at the model, score, compare.
_COMMANDS = (
    train.add_train,
    outputs.add_sample,
    outputs.add_info,
    score.add_evaluate,
    score.add_score,
    outputs.add_plot,
    outputs.add_interpolate,
    outputs.add_export,
    score.add_detect,
)


def build_parser() -> argparse.ArgumentParser:
    """Returns the argument parser of the `tfpvae` command."""
    parser = Parser(prog="tfpvae", description="Variational autoencoders from TFP layers.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in _COMMANDS:
        add(sub)
    for command in sub.choices.values():
        add_import_arg(command)
        # The command's own flags, so that messages name only those (`as_flags`).
        command.set_defaults(option_flags=frozenset(s for action in command._actions for s in action.option_strings))
    return parser


def _user_errors() -> tuple[type[BaseException], ...]:
    """The exceptions that mean the user asked for something that cannot be done as asked."""
    from tfpvae.datasets import DatasetNotFoundError
    from tfpvae.registry import UnregisteredNameError
    from tfpvae.runs import RunFolderError
    from tfpvae.serialization import ModelFormatError
    from tfpvae.streaming import BadRecordError
    from tfpvae.training import CheckpointError
    from tfpvae.write_guard import FolderInUseError

    return (
        UsageError,
        ModelFormatError,
        RunFolderError,
        CheckpointError,
        DatasetNotFoundError,
        BadRecordError,
        UnregisteredNameError,
        FolderInUseError,
        # The file system: no space left, permission denied, read-only, a missing folder.
        # The library's own writes raise StorageError, which names the operation and the path.
        OSError,
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the CLI; returns the exit status (0 ok, 1 training diverged, 2 user error, 130 interrupted)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        # First, so the parser's --architecture and --prior choices include what they register.
        import_modules(argv)
    except UsageError as err:
        print(f"tfpvae: error: {err}", file=sys.stderr)
        return 2
    args = build_parser().parse_args(argv)
    args.argv = argv  # what was typed, to tell an explicit flag from its default
    try:
        folder = Path(args.out).parent if getattr(args, "out_is_file", False) else None
        if folder is not None and not folder.is_dir():  # checked first: the output comes after all the work
            problem = "is a file, not a folder" if folder.exists() else "does not exist"
            raise NotADirectoryError(f"`--out {args.out}`: folder {folder} {problem}.")
        return args.func(args)
    except OutputExistsError as err:
        print(f"tfpvae: error: {refused(err)}", file=sys.stderr)
        return 2
    except _user_errors() as err:
        message = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        print(f"tfpvae: error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("tfpvae: interrupted", file=sys.stderr)
        return 130
