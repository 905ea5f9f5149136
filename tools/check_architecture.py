"""Check the architecture of the `tfpvae` package: six measures, each a function that returns its violations.

1. cycles: no import cycle among tfpvae modules (every import counts: module level, in functions, TYPE_CHECKING).
2. floors: no import from a lower floor to a higher one (FLOORS below); every module is placed on a floor.
3. function-length: no function or method over MAX_FUNCTION_LINES lines.
4. module-length: no module over MAX_MODULE_LINES physical lines.
5. duplicates: no run of MIN_DUPLICATE_LINES or more code lines written twice (docstrings, comments, imports
   and lines of lone brackets do not count) in tfpvae/, benchmarks/ and tools/.
6. public-names: every module named by `::: tfpvae.x` in docs/api/*.md imports, every name in `tfpvae.__all__`
   and every `tfpvae.x.y` named in docs/api/index.md resolves (imports TensorFlow; skip with --no-imports).

Run from anywhere: `python tools/check_architecture.py [--measure NAME] [--json] [--no-imports]`.
Prints one line per violation and a summary line per measure; exits 0 when all hold, 1 otherwise.
"""

from __future__ import annotations

import argparse
import ast
import fnmatch
import importlib
import json
import re
import sys
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "tfpvae"
DUPLICATE_ROOTS = (ROOT / "tfpvae", ROOT / "benchmarks", ROOT / "tools")
DOCS_API = ROOT / "docs" / "api"
MAX_FUNCTION_LINES = 100
MAX_MODULE_LINES = 600
MIN_DUPLICATE_LINES = 6

FLOOR_NAMES = ("ground", "data", "networks/priors", "scoring", "model", "tools", "runs", "top")
# The one place to edit: module name (or fnmatch pattern, such as "tfpvae.cli.*") -> floor, lowest first.
# Exact names win over patterns; a module that matches nothing is a violation ("unplaced module").
FLOORS = {
    **dict.fromkeys(["tfpvae._validation", "tfpvae._keras", "tfpvae._io", "tfpvae._arguments", "tfpvae._version"], 0),
    **dict.fromkeys(["tfpvae.config", "tfpvae.protocols", "tfpvae.subsets", "tfpvae.registry"], 0),
    **dict.fromkeys(["tfpvae.write_guard", "tfpvae._class_labels"], 0),
    **dict.fromkeys(["tfpvae.datasets", "tfpvae.streaming", "tfpvae.compression", "tfpvae.distribute"], 1),
    **dict.fromkeys(["tfpvae.schedules", "tfpvae.metrics"], 1),
    # streaming's split modules (extend this list, or name them tfpvae.streaming.* / tfpvae._streaming*)
    **dict.fromkeys(["tfpvae.input_files", "tfpvae.records", "tfpvae.image_files", "tfpvae.array_files"], 1),
    **dict.fromkeys(["tfpvae.tfrecords", "tfpvae.streaming.*", "tfpvae._streaming*"], 1),
    **dict.fromkeys(["tfpvae.networks", "tfpvae.priors", "tfpvae.precision"], 2),
    **dict.fromkeys(["tfpvae.scoring", "tfpvae.likelihood"], 3),
    **dict.fromkeys(["tfpvae.serialization", "tfpvae.model"], 4),
    **dict.fromkeys(["tfpvae.anomaly", "tfpvae.latent", "tfpvae.evolution", "tfpvae.uncertainty"], 5),
    **dict.fromkeys(["tfpvae.plots", "tfpvae.figures", "tfpvae.export", "tfpvae.tensorboard", "tfpvae.training"], 5),
    **dict.fromkeys(["tfpvae.checkpoints"], 5),  # the training state's file, split out of training
    **dict.fromkeys(["tfpvae.embedding", "tfpvae.charts"], 5),  # split out of latent and plots
    # beside anomaly: its per-image scores, the combined score, anomaly maps and batch tests
    **dict.fromkeys(["tfpvae.anomaly_scores", "tfpvae.combined", "tfpvae.anomaly_maps", "tfpvae.batch_tests"], 5),
    **dict.fromkeys(["tfpvae.runs", "tfpvae.bulk", "tfpvae.beam", "tfpvae.beam_*", "tfpvae.beam.*"], 6),
    **dict.fromkeys(["tfpvae.cli", "tfpvae.cli.*", "tfpvae.__main__", "tfpvae", "tfpvae._deprecated"], 7),
}
_PUNCTUATION_ONLY = re.compile(r"^[\s()\[\]{},;:.]*$")


def _rel(path: Path) -> str:
    path = Path(path).resolve()
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def _parse(path: Path) -> ast.Module:
    """The module's syntax tree; an empty one where it does not parse (`_unparsed` reports those)."""
    try:
        return ast.parse(path.read_text(), str(path))
    except SyntaxError:
        return ast.Module(body=[], type_ignores=[])


def _unparsed(paths: Iterable[Path]) -> list[str]:
    """A violation for each file that does not parse: the measures cannot see into it."""
    found = []
    for path in paths:
        try:
            ast.parse(path.read_text(), str(path))
        except SyntaxError as error:
            found.append(f"{_rel(path)}:{error.lineno} does not parse: {error.msg}")
    return found


def modules(package: Path = PACKAGE) -> dict[str, Path]:
    """Every module of the package, by dotted name (a package's __init__.py is the package's name)."""
    found = {}
    for path in sorted(Path(package).rglob("*.py")):
        parts = [package.name, *path.relative_to(package).with_suffix("").parts]
        found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def _targets(node: ast.AST, module: str, is_package: bool, known: dict[str, Path]) -> list[str]:
    """The modules of the package that one import statement imports (none for other statements)."""
    if isinstance(node, ast.Import):  # `import a.b.c`: the deepest of a.b.c, a.b, a that is a module of ours
        names = [alias.name.split(".") for alias in node.names]
        prefixes = [[".".join(parts[:i]) for i in range(len(parts), 0, -1)] for parts in names]
        return [next(p for p in options if p in known) for options in prefixes if any(p in known for p in options)]
    if not isinstance(node, ast.ImportFrom):
        return []
    base = node.module or ""
    if node.level:  # relative: up from this module's package
        anchor = module.split(".") if is_package else module.split(".")[:-1]
        base = ".".join(anchor[: len(anchor) - node.level + 1] + ([base] if base else []))
    # `from a import b`: the module a.b if there is one, else a (b is then a name defined in a)
    targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base for alias in node.names]
    return [target for target in targets if target in known]


def import_graph(package: Path = PACKAGE) -> dict[str, list[tuple[str, int]]]:
    """module -> [(imported module of the same package, line)], for every import statement anywhere in the module."""
    known = modules(package)
    graph = {}
    for name, path in known.items():
        edges = {
            (target, node.lineno)
            for node in ast.walk(_parse(path))
            for target in _targets(node, name, path.name == "__init__.py", known)
        }
        graph[name] = sorted(edges, key=lambda edge: (edge[1], edge[0]))
    return graph


def _reachable(graph: dict[str, list[tuple[str, int]]], start: str) -> set[str]:
    seen, todo = set(), [start]
    while todo:
        for target, _ in graph[todo.pop()]:
            if target not in seen:
                seen.add(target)
                todo.append(target)
    return seen


def check_cycles(package: Path = PACKAGE) -> list[str]:
    """Each import cycle: one line per strongly connected component, with the imports between its modules."""
    graph = import_graph(package)
    paths = modules(package)
    violations = _unparsed(paths.values())
    reach = {module: _reachable(graph, module) for module in graph}
    components = {tuple(sorted(m for m in reach[n] if n in reach[m])) for n in graph if n in reach[n]}
    for component in sorted(components):
        imports = [
            f"{_rel(paths[source])}:{line} {source} -> {target}"
            for source in component
            for target, line in graph[source]
            if target in component
        ]
        violations.append(f"cycle among {', '.join(component)}: " + "; ".join(imports))
    return violations


def floor_of(module: str, floors: dict[str, int] = FLOORS) -> int | None:
    """The floor of a module: its exact entry, else the first fnmatch pattern it matches, else None."""
    if module in floors:
        return floors[module]
    return next((floor for pattern, floor in floors.items() if fnmatch.fnmatchcase(module, pattern)), None)


def check_floors(package: Path = PACKAGE, floors: dict[str, int] = FLOORS) -> list[str]:
    """Unplaced modules, and each import from a lower floor to a higher one."""
    paths = modules(package)
    violations = _unparsed(paths.values())
    violations += [
        f"{_rel(paths[m])}: unplaced module {m} (add it to FLOORS)" for m in paths if floor_of(m, floors) is None
    ]
    for source, edges in import_graph(package).items():
        low = floor_of(source, floors)
        for target, line in edges:
            high = floor_of(target, floors)
            if low is not None and high is not None and high > low:
                violations.append(
                    f"{_rel(paths[source])}:{line} {source} ({FLOOR_NAMES[low]}) imports {target} ({FLOOR_NAMES[high]})"
                )
    return violations


def _functions(tree: ast.AST, prefix: str = "") -> Iterable[tuple[str, ast.AST]]:
    """(qualified name, node) of every function and method, nested ones included."""
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            if not isinstance(node, ast.ClassDef):
                yield prefix + node.name, node
            yield from _functions(node, f"{prefix}{node.name}.")
        else:
            yield from _functions(node, prefix)


def check_function_length(package: Path = PACKAGE, limit: int = MAX_FUNCTION_LINES) -> list[str]:
    """Each function or method longer than `limit` lines, from its `def` line to its last line."""
    violations = _unparsed(modules(package).values())
    for path in modules(package).values():
        for name, node in _functions(_parse(path)):
            length = node.end_lineno - node.lineno + 1
            if length > limit:
                violations.append(f"{_rel(path)}:{node.lineno} {name} is {length} lines (limit {limit})")
    return violations


def check_module_length(package: Path = PACKAGE, limit: int = MAX_MODULE_LINES) -> list[str]:
    """Each module longer than `limit` physical lines."""
    violations = []
    for path in modules(package).values():
        length = len(path.read_text().splitlines())
        if length > limit:
            violations.append(f"{_rel(path)} is {length} lines (limit {limit})")
    return violations


def code_lines(path: Path) -> list[tuple[int, str]]:
    """(line number, stripped text) of the lines that count for duplicates: no blanks, comments, docstrings,
    import statements, function signatures (methods that share keywords repeat their interface, not their
    logic) or lines of lone brackets and commas."""
    text = path.read_text()
    skipped: set[int] = set()
    for node in ast.walk(_parse(path)):
        if isinstance(node, ast.Import | ast.ImportFrom):
            skipped.update(range(node.lineno, node.end_lineno + 1))
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            skipped.update(range(node.lineno, node.body[0].lineno))  # `def` down to the first body line
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            if ast.get_docstring(node, clean=False) is not None:
                skipped.update(range(node.body[0].lineno, node.body[0].end_lineno + 1))
    return [
        (number, line.strip())
        for number, line in enumerate(text.splitlines(), 1)
        if number not in skipped and not line.strip().startswith("#") and not _PUNCTUATION_ONLY.match(line)
    ]


def _same_line(la: list[tuple[int, str]], lb: list[tuple[int, str]]) -> Callable[[int, int], bool]:
    return lambda i, j: 0 <= i < len(la) and 0 <= j < len(lb) and la[i][1] == lb[j][1]


def check_duplicates(roots: Sequence[Path] = DUPLICATE_ROOTS, size: int = MIN_DUPLICATE_LINES) -> list[str]:
    """Each pair of places that share a run of `size` or more code lines, as file:first-last ~ file:first-last."""
    files = [path for root in roots for path in sorted(Path(root).rglob("*.py"))]
    lines = [code_lines(path) for path in files]
    windows: dict[int, list[tuple[int, int]]] = defaultdict(list)
    for f, file_lines in enumerate(lines):
        texts = [text for _, text in file_lines]
        for i in range(len(texts) - size + 1):
            windows[hash(tuple(texts[i : i + size]))].append((f, i))
    pairs = []
    for places in windows.values():
        for a, (fa, ia) in enumerate(places):
            for fb, ib in places[a + 1 :]:
                la, lb = lines[fa], lines[fb]
                same = _same_line(la, lb)
                if (fa == fb and ib - ia < size) or same(ia - 1, ib - 1):
                    continue  # overlaps itself, or is the tail of a longer run reported from its start
                if not all(same(ia + k, ib + k) for k in range(size)):
                    continue  # a hash collision
                n = size
                while same(ia + n, ib + n) and not (fa == fb and ia + n >= ib):
                    n += 1
                pairs.append(
                    f"{_rel(files[fa])}:{la[ia][0]}-{la[ia + n - 1][0]} ~ "
                    f"{_rel(files[fb])}:{lb[ib][0]}-{lb[ib + n - 1][0]} ({n} lines)"
                )
    return _unparsed(files) + sorted(pairs)


def _resolve(dotted: str) -> object:
    """The object a dotted name names: the longest importable module prefix, then attributes."""
    parts = dotted.split(".")
    for i in range(len(parts), 0, -1):
        try:
            value = importlib.import_module(".".join(parts[:i]))
        except ModuleNotFoundError as error:
            if error.name != ".".join(parts[:i]) or i == 1:
                raise  # a missing dependency, or a missing package
            continue
        for attribute in parts[i:]:
            value = getattr(value, attribute)
        return value
    raise ImportError(dotted)


def check_public_names(docs: Path = DOCS_API, package: str = "tfpvae") -> list[str]:
    """Each documented module or name that cannot be imported or resolved."""
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    try:
        exported = importlib.import_module(package).__all__
    except Exception as error:  # noqa: BLE001 -- any failure to import is the finding
        return [f"{package} does not import: {type(error).__name__}: {error}"]
    names = {f"{package}.{name}": f"{package}.__all__" for name in exported}  # dotted name -> where documented
    # `::: tfpvae.x` directives, backticked `tfpvae.x.y` and mkdocs autorefs [text][tfpvae.x.y]
    pattern = re.compile(rf"^:::\s+([\w.]+)|`({package}(?:\.\w+)+)`|\]\[({package}(?:\.\w+)+)\]")
    for page in sorted(Path(docs).glob("*.md")):
        for number, line in enumerate(page.read_text().splitlines(), 1):
            for match in pattern.finditer(line):
                names.setdefault(next(group for group in match.groups() if group), f"{_rel(page)}:{number}")
    violations = []
    for name, where in names.items():
        try:
            _resolve(name)
        except Exception as error:  # noqa: BLE001
            violations.append(f"{where}: {name} does not resolve: {type(error).__name__}: {error}")
    return violations


MEASURES: dict[str, Callable[[], list[str]]] = {
    "cycles": check_cycles,
    "floors": check_floors,
    "function-length": check_function_length,
    "module-length": check_module_length,
    "duplicates": check_duplicates,
    "public-names": check_public_names,
}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--measure", choices=sorted(MEASURES), action="append", help="run only this measure")
    parser.add_argument("--json", action="store_true", help="print one JSON object: measure -> violations")
    parser.add_argument("--no-imports", action="store_true", help="skip public-names (it imports TensorFlow)")
    args = parser.parse_args(argv)
    chosen = args.measure or [m for m in MEASURES if not (args.no_imports and m == "public-names")]
    results = {name: MEASURES[name]() for name in chosen}
    if args.json:
        print(json.dumps({"ok": not any(results.values()), "measures": results}, indent=2))
    else:
        for name, violations in results.items():
            for violation in violations:
                print(f"{name}: {violation}")
        for name, violations in results.items():
            print(f"== {name}: {'ok' if not violations else f'{len(violations)} violation(s)'}")
    return 1 if any(results.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
