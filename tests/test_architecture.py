"""The architecture measures of tools/check_architecture.py: over the real package, and over tiny synthetic ones."""

from __future__ import annotations

import importlib.util
import json
import textwrap
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "tools" / "check_architecture.py"
_spec = importlib.util.spec_from_file_location("check_architecture", SCRIPT)
arch = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(arch)


def _violations(found: list[str]) -> str:
    return f"{len(found)} violation(s):\n" + "\n".join(found)


# The real package: each measure holds.


def test_no_import_cycles():
    found = arch.check_cycles()
    assert not found, _violations(found)


def test_no_upward_imports_and_every_module_placed():
    found = arch.check_floors()
    assert not found, _violations(found)


def test_no_long_functions():
    found = arch.check_function_length()
    assert not found, _violations(found)


def test_no_long_modules():
    found = arch.check_module_length()
    assert not found, _violations(found)


def test_no_duplicated_blocks():
    found = arch.check_duplicates()
    assert not found, _violations(found)


def test_documented_names_resolve():
    found = arch.check_public_names()
    assert not found, _violations(found)


# The checker itself, on synthetic packages.


def _package(root: Path, files: dict[str, str]) -> Path:
    """Writes a package `tfpvae` under root from {relative path: source}; returns its folder."""
    package = root / "tfpvae"
    for name, source in {"__init__.py": "", **files}.items():
        path = package / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(source))
    return package


def test_cycle_through_an_import_inside_a_function_is_found(tmp_path):
    package = _package(
        tmp_path,
        {
            "a.py": "from tfpvae import b\n",
            "b.py": "def f():\n    from tfpvae.a import thing\n    return thing\n",
            "c.py": "import tfpvae.a\n",
        },
    )
    found = arch.check_cycles(package)
    assert len(found) == 1, found
    assert "tfpvae.a, tfpvae.b" in found[0]
    assert "b.py:2 tfpvae.b -> tfpvae.a" in found[0]


def test_cycle_through_type_checking_and_the_package_root_is_found(tmp_path):
    package = _package(
        tmp_path,
        {
            "__init__.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from tfpvae.model import VAE\n",
            "model.py": "from tfpvae import VAE as _unused\n",  # a name of the root: imports tfpvae itself
        },
    )
    found = arch.check_cycles(package)
    assert len(found) == 1 and "tfpvae, tfpvae.model" in found[0], found


def test_self_import_is_a_cycle_and_an_acyclic_package_is_clean(tmp_path):
    assert len(arch.check_cycles(_package(tmp_path / "x", {"a.py": "import tfpvae.a\n"}))) == 1
    clean = _package(tmp_path / "y", {"a.py": "import os\n", "b.py": "from tfpvae.a import os\n"})
    assert arch.check_cycles(clean) == []


def test_relative_and_subpackage_imports_resolve(tmp_path):
    package = _package(
        tmp_path,
        {
            "core.py": "",
            "cli/__init__.py": "from . import train\n",
            "cli/train.py": "from . import helpers\nfrom .helpers import run\n"
            + "from ..core import x\nfrom .. import core\n",
            "cli/helpers.py": "from tfpvae.cli import train as _t\n",
        },
    )
    graph = arch.import_graph(package)
    assert graph["tfpvae.cli"] == [("tfpvae.cli.train", 1)]
    assert graph["tfpvae.cli.train"] == [
        ("tfpvae.cli.helpers", 1),
        ("tfpvae.cli.helpers", 2),
        ("tfpvae.core", 3),
        ("tfpvae.core", 4),
    ]
    assert graph["tfpvae.cli.helpers"] == [("tfpvae.cli.train", 1)]


def test_upward_import_and_unplaced_module_are_found(tmp_path):
    package = _package(
        tmp_path,
        {
            "low.py": "def f():\n    from tfpvae import high\n",
            "high.py": "from tfpvae.low import f\n",  # downward: allowed
            "peer.py": "import tfpvae.low\n",  # same floor: allowed
            "cli/__init__.py": "",
            "cli/train.py": "import tfpvae.high\n",
            "stray.py": "",
        },
    )
    floors = {"tfpvae": 7, "tfpvae.cli": 7, "tfpvae.cli.*": 7, "tfpvae.low": 0, "tfpvae.peer": 0, "tfpvae.hi*": 5}
    found = arch.check_floors(package, floors)
    assert len(found) == 2, found
    assert any("unplaced module tfpvae.stray" in line for line in found)
    assert any("low.py:2 tfpvae.low (ground) imports tfpvae.high (tools)" in line for line in found)


def test_import_of_the_package_root_is_an_import_of_the_top_floor(tmp_path):
    package = _package(tmp_path, {"low.py": "import tfpvae\n"})
    found = arch.check_floors(package, {"tfpvae": 7, "tfpvae.low": 0})
    assert len(found) == 1 and "imports tfpvae (top)" in found[0], found


def test_a_module_that_does_not_parse_is_reported(tmp_path):
    package = _package(tmp_path, {"broken.py": "def f(:\n"})
    for check in (arch.check_cycles, arch.check_floors, arch.check_function_length):
        found = check(package) if check is not arch.check_floors else check(package, {"tfpvae*": 0})
        assert len(found) == 1 and "broken.py:1 does not parse" in found[0], found
    assert "broken.py:1 does not parse" in arch.check_duplicates([package])[0]


def test_floor_map_places_every_module_named_in_the_layering():
    assert arch.floor_of("tfpvae.cli.train") == 7
    assert arch.floor_of("tfpvae") == 7
    assert arch.floor_of("tfpvae._validation") == 0
    assert arch.floor_of("tfpvae.model") == 4
    assert arch.floor_of("tfpvae.nowhere") is None


def _function(name: str, lines: int, indent: str = "") -> str:
    body = "".join(f"{indent}    x{i} = {i}\n" for i in range(lines - 2))
    return f'{indent}def {name}():\n{indent}    """Doc."""\n{body}'


def test_function_over_100_lines_is_found_and_100_is_not(tmp_path):
    source = _function("long", 101) + "\n\nclass C:\n" + _function("method", 101, "    ") + "\n" + _function("ok", 100)
    package = _package(tmp_path, {"m.py": source})
    found = arch.check_function_length(package)
    assert len(found) == 2, found
    assert found[0].endswith("m.py:1 long is 101 lines (limit 100)")
    assert "C.method is 101 lines" in found[1]


def test_module_over_600_lines_is_found_and_600_is_not(tmp_path):
    package = _package(tmp_path, {"long.py": "x = 1\n" * 601, "ok.py": "x = 1\n" * 600})
    found = arch.check_module_length(package)
    assert len(found) == 1 and "long.py is 601 lines" in found[0], found


BLOCK = "".join(f"    total = total * {i} + step({i})\n" for i in range(6))


def test_duplicated_six_line_block_is_found(tmp_path):
    first = "def f(step):\n    total = 0\n" + BLOCK + "    return total\n"
    second = (
        "# a comment\n\ndef g(step):\n    total = 1\n"
        + BLOCK.replace("step(3)\n", "step(3)  \n\n    # note\n")
        + "    return -total\n"
    )
    package = _package(tmp_path, {"a.py": first, "b.py": second})
    found = arch.check_duplicates([package])
    assert len(found) == 1, found
    assert found[0].endswith("a.py:3-8 ~ " + str(package / "b.py") + ":5-12 (6 lines)"), found


def test_five_line_block_and_docstrings_are_not_duplicates(tmp_path):
    docstring = '    """Sums.\n\n' + BLOCK + '    """\n'
    five = "".join(BLOCK.splitlines(keepends=True)[:5])
    package = _package(
        tmp_path,
        {
            "a.py": f"def f(step):\n{docstring}    total = 0\n{five}    return total\n",
            "b.py": f"def g(step):\n{docstring}    total = 1\n{five}    return -total\n",
            "c.py": f"class C:\n{docstring}",
        },
    )
    assert arch.check_duplicates([package]) == []


def test_undocumented_or_missing_public_names_are_found(tmp_path, monkeypatch):
    package = tmp_path / "fakepkg"
    package.mkdir()
    (package / "__init__.py").write_text('__all__ = ["a", "missing"]\na = 1\n')
    (package / "mod.py").write_text("x = 1\n")
    docs = tmp_path / "api"
    docs.mkdir()
    (docs / "mod.md").write_text("# `fakepkg.mod`\n\n::: fakepkg.mod\n")
    (docs / "gone.md").write_text("::: fakepkg.gone\n")
    (docs / "index.md").write_text("| `fakepkg.mod.x`, `fakepkg.mod.y` | [`a`][fakepkg.a] [`b`][fakepkg.b] |\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    found = arch.check_public_names(docs, "fakepkg")
    names = sorted(line.split(": ")[1].split()[0] for line in found)
    assert names == ["fakepkg.b", "fakepkg.gone", "fakepkg.missing", "fakepkg.mod.y"], found


def test_main_reports_violations_as_json_and_exit_status(tmp_path, monkeypatch, capsys):
    package = _package(tmp_path, {"long.py": "x = 1\n" * 601})
    monkeypatch.setitem(arch.MEASURES, "module-length", lambda: arch.check_module_length(package))
    assert arch.main(["--measure", "module-length", "--json"]) == 1
    report = json.loads(capsys.readouterr().out)
    assert report["ok"] is False and len(report["measures"]["module-length"]) == 1
    monkeypatch.setitem(arch.MEASURES, "module-length", lambda: [])
    assert arch.main(["--measure", "module-length"]) == 0
    assert capsys.readouterr().out.strip() == "== module-length: ok"


def test_resolve_follows_modules_then_attributes():
    assert arch._resolve("tfpvae.__version__") == arch._resolve("tfpvae").__version__
    with pytest.raises(AttributeError):
        arch._resolve("tfpvae.definitely_missing")
    with pytest.raises(ModuleNotFoundError):
        arch._resolve("no_such_package_anywhere.x")


def test_a_shared_signature_is_not_a_duplicate_but_a_shared_body_is(tmp_path):
    params = "".join(f"    {name}=None,\n" for name in ("seed", "ids", "offset", "binarize_seed", "budget", "progress"))
    signature = "def {name}(\n    x,\n    *,\n" + params + "):\n"
    package = _package(
        tmp_path,
        {
            "a.py": signature.format(name="elbo") + "    return run(x, 'elbo')\n",
            "b.py": signature.format(name="log_prob") + "    return run(x, 'log_prob')\n",
        },
    )
    assert arch.check_duplicates([package]) == []
    with_body = _package(
        tmp_path / "second",
        {
            "a.py": signature.format(name="elbo") + BLOCK,
            "b.py": signature.format(name="log_prob") + BLOCK,
        },
    )
    assert len(arch.check_duplicates([with_body])) == 1
