"""Loads the repository's scripts (benchmarks/*.py) as modules, for the tests that call them.

Test modules import it as `from scripts import benchmark` (tests/ is on sys.path, as for
`references`).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[1]


def benchmark(name: str) -> ModuleType:
    """benchmarks/`name`.py, imported afresh as the module "benchmarks_`name`"."""
    spec = importlib.util.spec_from_file_location(f"benchmarks_{name}", ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
