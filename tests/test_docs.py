"""The documentation is tested: its examples run, its CLI reference is current, the site builds.

(a) Every fenced ```python block of README.md and docs/**/*.md runs without raising: the
    blocks of one file in document order, in one fresh namespace per file.
(b) Every `tfpvae ...` command line of the ```bash and ```console blocks runs and exits 0
    (in ```console blocks, the lines after a `$ ` prompt). Commands joined by `&&` are run
    one after the other; a part that starts with `pip install` is skipped, since the tests
    run in the environment that is already installed (so README's first command,
    `pip install . && tfpvae train ...`, runs its `tfpvae train` part exactly as written).
    Other shell lines (`export ...`, `mkdocs ...`, `python -m pytest ...`) are not run.
    A file's python blocks and commands run together, in document order, in one
    subprocess whose working directory is a fresh temporary folder, with TFPVAE_DATA_DIR
    set; commands are run through `tfpvae.cli.main`, the function behind the `tfpvae`
    console script, so TensorFlow is imported once per file.
(c) docs/cli.md lists exactly the commands and options of `tfpvae.cli.build_parser()`.
    After changing the CLI, regenerate it with `python tests/test_docs.py`.
(d) `mkdocs build --strict` passes: tests/test_site.py builds the site once and checks it.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

import pytest

# Each documentation file's examples (`tfpvae train` among them) run for minutes in a subprocess:
# the slow tier, with the whole module.
pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
CLI_PAGE = DOCS / "cli.md"
BEGIN, END = "<!-- BEGIN GENERATED: python tests/test_docs.py -->", "<!-- END GENERATED -->"
# Seconds one documentation file may take, all its examples together.
FILE_TIMEOUT = 420

_LANGUAGES = {"python": "python", "py": "python", "bash": "bash", "sh": "bash", "shell": "bash", "console": "console"}
_FENCE = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>`{3,}|~{3,})[ \t]*(?P<info>[^\s`]*)")


@dataclass
class Step:
    """One thing to run: a python block, or one `tfpvae` command line."""

    kind: str  # "python" or "cli"
    line: int  # 1-based line of the block or command in its file
    code: str = ""  # python source
    argv: tuple[str, ...] = ()  # arguments after `tfpvae`


def code_blocks(text: str) -> list[tuple[str, int, str]]:
    """(language, first line number of the body, body) of every fenced block, dedented."""
    blocks, lines, i = [], text.splitlines(), 0
    while i < len(lines):
        m = _FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        fence, indent, start = m["fence"], len(m["indent"]), i + 1
        body = []
        i += 1
        while i < len(lines) and not lines[i].strip().startswith(fence):
            body.append(lines[i][indent:] if lines[i][:indent].strip() == "" else lines[i])
            i += 1
        blocks.append((m["info"].lower(), start + 1, textwrap.dedent("\n".join(body)) + "\n"))
        i += 1
    return blocks


def shell_commands(body: str, console: bool) -> list[tuple[int, str]]:
    """(offset within the block, command text) of each command line, continuations joined."""
    commands, pending, first = [], "", 0
    for offset, raw in enumerate(body.splitlines()):
        line = raw.rstrip()
        if not pending:
            if not line.strip() or line.lstrip().startswith("#"):
                continue  # blank or comment
            if console:
                if not line.startswith("$ "):
                    continue  # output
                line = line[2:]
            first = offset
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        commands.append((first, pending + line))
        pending = ""
    return commands


def tfpvae_invocations(command: str) -> list[tuple[str, ...]]:
    """The `tfpvae` argument lists of a shell line; `pip install` parts and other programs are left out."""
    tokens = [os.path.expandvars(t) for t in shlex.split(command, comments=True)]
    parts, current = [], []
    for token in tokens:
        if token in ("&&", ";"):
            parts.append(current)
            current = []
        else:
            current.append(token)
    parts.append(current)
    runs = []
    for part in parts:
        if not part or part[:2] == ["pip", "install"] or part[0] != "tfpvae":
            continue
        unsupported = [t for t in part if t in ("|", "||", ">", ">>", "<", "&") or t.startswith((">", "2>"))]
        if unsupported:
            raise ValueError(f"documentation command uses shell syntax the test cannot run ({unsupported}): {command}")
        runs.append(tuple(part[1:]))
    return runs


def steps_of(path: Path) -> list[Step]:
    steps = []
    for language, line, body in code_blocks(path.read_text()):
        kind = _LANGUAGES.get(language)
        if kind == "python":
            steps.append(Step("python", line, code=body))
        elif kind in ("bash", "console"):
            for offset, command in shell_commands(body, console=kind == "console"):
                steps.extend(Step("cli", line + offset, argv=argv) for argv in tfpvae_invocations(command))
    return steps


def documentation_files() -> list[Path]:
    return [ROOT / "README.md", *sorted(DOCS.rglob("*.md"))]


# Runs one file's steps in order; prints a marker line per step so a failure names its line.
_RUNNER = r"""
import json, sys, time, traceback
name, steps = sys.argv[1], json.load(open(sys.argv[2]))
namespace = {"__name__": "__main__"}
for step in steps:
    where = f"{name}:{step['line']}"
    print(f"=== {where} {step['kind']} {' '.join(step['argv'])}", flush=True)
    started = time.perf_counter()
    try:
        if step["kind"] == "python":
            exec(compile(step["code"], where, "exec"), namespace)
        else:
            from tfpvae.cli import main
            try:
                status = main(step["argv"])
            except SystemExit as stop:  # argparse: --help exits 0, a usage error 2
                status = stop.code
            if status not in (0, None):
                raise SystemExit(f"`tfpvae {' '.join(step['argv'])}` exited with status {status}")
    except BaseException:
        traceback.print_exc()
        print(f"DOCS-EXAMPLE-FAILED {where}", flush=True)
        sys.exit(1)
    print(f"=== {where} took {time.perf_counter() - started:.1f}s", flush=True)
"""


def _data_dir() -> str:
    return os.environ.get("TFPVAE_DATA_DIR") or str(ROOT.parent / "shared" / "data")


@pytest.mark.parametrize(
    "path",
    [p for p in documentation_files() if steps_of(p)],
    ids=lambda p: str(p.relative_to(ROOT)),
)
def test_examples_run(path, tmp_path):
    steps = steps_of(path)
    plan = tmp_path / "plan.json"
    plan.write_text(json.dumps([step.__dict__ for step in steps]))
    runner = tmp_path / "run_examples.py"
    runner.write_text(_RUNNER)
    work = tmp_path / "work"
    work.mkdir()
    env = {**os.environ, "TFPVAE_DATA_DIR": _data_dir(), "MPLBACKEND": "Agg", "PYTHONPATH": str(ROOT)}
    name = str(path.relative_to(ROOT))
    proc = subprocess.run(
        [sys.executable, str(runner), name, str(plan)],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        timeout=FILE_TIMEOUT,
    )
    assert proc.returncode == 0, f"an example of {name} failed:\n{proc.stdout[-6000:]}\n{proc.stderr[-6000:]}"
    if path.name == "README.md":
        # The README promises what its first command writes.
        run = work / "runs" / "digits"
        for promised in re.findall(r"`([\w.]+\.(?:json|npz|csv|png))`", path.read_text().split("## Python")[0]):
            assert (run / promised).is_file(), f"README says runs/digits holds {promised}; it does not"


def test_readme_opens_with_the_two_commands():
    blocks = code_blocks((ROOT / "README.md").read_text())
    language, _, body = blocks[0]
    commands = [command for _, command in shell_commands(body, console=False)]
    assert language == "bash"
    first = "pip install . && tfpvae train --dataset digits --epochs 60 --batch-size 32 --latent-dim 8 --seed 0"
    assert commands[0] == first + " --out runs/digits"
    assert commands[1] == 'pip install -e ".[test,dev]" && python -m pytest -q -n 2'
    ci = (ROOT / ".ci" / "run").read_text()
    assert commands[1] in ci, ".ci/run must run README's second command"


def test_extraction_rules():
    text = textwrap.dedent(
        """\
        x
        ```bash
        pip install . && tfpvae info --model m  # note
        tfpvae sample \\
          -n 2
        echo hi
        ```
          ```console
          $ tfpvae --help
          usage: tfpvae
          ```
        ```python
        print(1)
        ```
        ```text
        tfpvae not-run
        ```
        """
    )
    steps = steps_of_text(text)
    assert [(s.kind, s.argv) for s in steps] == [
        ("cli", ("info", "--model", "m")),
        ("cli", ("sample", "-n", "2")),
        ("cli", ("--help",)),
        ("python", ()),
    ]
    assert [s.line for s in steps] == [3, 4, 9, 13]


def steps_of_text(text: str) -> list[Step]:
    import tempfile

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "page.md"
        path.write_text(text)
        return steps_of(path)


# --------------------------------------------------------------------------- CLI reference
# Each command's section: what it does, its one example call (the `example:` of its --help,
# run by test_examples_run with the other examples of docs/cli.md), and a list of its options,
# each with its kind of value and its default stated once. Options every command takes with
# the same help (--import, --help) are listed once, above the commands. A list, not a table:
# a table's narrow columns split option names and values mid-word.
_DEFAULT = re.compile(r"\s*\(default:? ([^()]*(?:\([^()]*\)[^()]*)*)\)$")


def _cell(text: str) -> str:
    # Help strings are argparse format strings: "%%" is how they write a literal "%".
    return " ".join(str(text).split()).replace("%%", "%").replace("|", "\\|")


def _visible(sub: argparse.ArgumentParser) -> list[argparse.Action]:
    return [a for a in sub._actions if not isinstance(a, argparse._HelpAction) and a.help != argparse.SUPPRESS]


def _option_name(action: argparse.Action) -> str:
    if not action.option_strings:
        return f"`{action.metavar or action.dest}`"
    *aliases, last = action.option_strings
    # Only a chosen metavar (K, N, FILES, RUN_DIR) says more than the kind of value; the
    # default one (the flag in capitals) would only repeat the flag.
    if action.nargs != 0 and action.metavar:
        value = action.metavar
        last = f"{last} {value} ..." if action.nargs in ("+", "*") else f"{last} {value}"
    return ", ".join(f"`{s}`" for s in (*aliases, last))


def _option_value(action: argparse.Action, description: str) -> str:
    if action.nargs == 0:
        return "flag"
    several = action.nargs in ("+", "*")
    if action.choices is not None:
        if description.startswith("one of"):  # the help lists them already
            return ""
        return ("one or more of " if several else "one of ") + ", ".join(f"`{c}`" for c in action.choices)
    if action.type is not None:
        name = getattr(action.type, "__name__", str(action.type))
        kind = {"int": "integer", "float": "number", "str": "text"}.get(name, name)
    else:
        kind = "text"
    return kind + (", one or more" if several else "")


def _option_default(action: argparse.Action, words: str | None) -> str:
    """The default, once: argparse's value, with what the help says of it where that says more."""
    if action.required:
        return "required"
    value = action.default
    if action.nargs == 0:  # a flag's default is its absence: what happens without it
        return f"without it: {words}" if words else ""
    if value in (None, argparse.SUPPRESS) or value == []:  # the help says what happens
        if words and " " not in words:
            return f"default `{words}`"
        return f"default: {words}" if words else ""
    if isinstance(value, (list, tuple)):
        return f"default: {words}" if words else "default " + " ".join(f"`{v}`" for v in value)
    if words is None or words == str(value):
        return f"default `{value}`"
    if words.startswith(f"{value}:"):
        return f"default `{value}`:{words[len(str(value)) + 1 :]}"
    return f"default `{value}`: {words}"


def _option_line(action: argparse.Action) -> str:
    description = _cell(action.help or "")
    found = _DEFAULT.search(description)
    words = found.group(1) if found else None
    if found:
        description = description[: found.start()]
    # Flags named in the help as code, so that a line is never broken after their "--".
    description = re.sub(r"(?<![\w`-])(--[a-z][a-z0-9-]*)", r"`\1`", description)
    facts = "; ".join(f for f in (_option_value(action, description), _option_default(action, words)) if f)
    return f"- {_option_name(action)} ({facts}): {description}"


def _subcommands(parser: argparse.ArgumentParser) -> list[tuple[str, str, argparse.ArgumentParser]]:
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    helps = {choice.dest: choice.help for choice in action._choices_actions}
    return [(name, helps.get(name, ""), sub) for name, sub in action.choices.items()]


def _example(name: str, sub: argparse.ArgumentParser) -> str:
    """The example call that ends the command's --help (`tfpvae.cli._common.example`)."""
    epilog = sub.epilog or ""
    if not epilog.startswith("example:\n"):
        raise AssertionError(f"`tfpvae {name} --help` does not end with an example call")
    return textwrap.dedent(epilog.removeprefix("example:\n")).strip()


def _shared(commands: list[tuple[str, str, argparse.ArgumentParser]]) -> list[argparse.Action]:
    """The options every command takes with the same help."""
    first, *rest = [_visible(sub) for _, _, sub in commands]
    return [
        a
        for a in first
        if all(any(b.option_strings == a.option_strings and b.help == a.help for b in other) for other in rest)
    ]


def render_cli_reference(parser: argparse.ArgumentParser) -> str:
    """The generated part of docs/cli.md: the commands, then each one's example call and options."""
    commands = _subcommands(parser)
    shared = _shared(commands)
    shared_flags = [a.option_strings for a in shared]
    out = [BEGIN, "", "The commands:", ""]
    out += [f"- [`{name}`](#tfpvae-{name}): {_cell(help_)}" for name, help_, _ in commands]
    out += ["", "Every command also takes:", ""]
    out += [_option_line(a) for a in shared]
    out.append("- `-h`, `--help` (flag): print the command's options and its example call, and exit")
    for name, help_, sub in commands:
        text = _cell(help_)
        out += ["", f"## tfpvae {name}", "", f"{text[:1].upper()}{text[1:]}.", ""]
        out += ["```bash", _example(name, sub), "```", ""]
        out += [_option_line(a) for a in _visible(sub) if a.option_strings not in shared_flags]
    out += ["", END]
    return "\n".join(out) + "\n"


def _generated_part(text: str) -> str:
    if BEGIN not in text or END not in text:
        raise AssertionError(f"{CLI_PAGE} lacks the markers {BEGIN} ... {END}")
    return text[text.index(BEGIN) : text.index(END) + len(END)] + "\n"


def write_cli_reference() -> None:
    from tfpvae.cli import build_parser

    text = CLI_PAGE.read_text()
    CLI_PAGE.write_text(text.replace(_generated_part(text), render_cli_reference(build_parser())))


def test_cli_reference_matches_parser():
    from tfpvae.cli import build_parser

    parser = build_parser()
    expected = render_cli_reference(parser)
    actual = _generated_part(CLI_PAGE.read_text())
    assert actual == expected, "docs/cli.md is out of date with tfpvae.cli: run `python tests/test_docs.py`"
    # Independently of the renderer: every command and every visible option is on the page.
    for name, _, sub in _subcommands(parser):
        assert f"## tfpvae {name}\n" in actual
        # One example call per command, a `tfpvae NAME ...` line that test_examples_run runs.
        section = actual.split(f"## tfpvae {name}\n")[1].split("\n## ")[0]
        calls = [
            argv
            for language, _, body in code_blocks(section)
            if language == "bash"
            for _, command in shell_commands(body, console=False)
            for argv in tfpvae_invocations(command)
        ]
        assert len(calls) == 1 and calls[0][0] == name, (name, calls)
        for action in sub._actions:
            if action.help != argparse.SUPPRESS:
                for flag in action.option_strings:
                    assert f"`{flag}`" in actual or f"`{flag} " in actual, (name, flag)


# --------------------------------------------------------------------------- site build
def test_every_public_module_has_an_api_page():
    nav = (ROOT / "mkdocs.yml").read_text()
    for module in sorted((ROOT / "tfpvae").glob("*.py")):
        name = module.stem
        if name.startswith("_") or name == "cli":  # the CLI has its own page, docs/cli.md
            continue
        page = DOCS / "api" / f"{name}.md"
        assert page.is_file() and f"::: tfpvae.{name}\n" in page.read_text(), f"no API page for tfpvae.{name}"
        assert f"api/{name}.md" in nav, f"docs/api/{name}.md is not in the mkdocs.yml nav"


if __name__ == "__main__":
    write_cli_reference()
    print(f"wrote {CLI_PAGE.relative_to(ROOT)}")
