"""Run the property-based tests of tests/test_fuzz.py for a set time and report the cases tried and their outcomes.

One pytest run with the hypothesis profile "fuzz" (tests/conftest.py): each property repeats hypothesis runs
with fresh random seeds until its share of the time is spent (TFPVAE_FUZZ_SECONDS), and counts every case and
each reader's outcome, "ok" or the error type, and the known bugs it met (TFPVAE_FUZZ_REPORT). The strict-xfail
reproducers of the known bugs are left out: they are single cases, not properties.

Run from anywhere: `python tools/fuzz.py --minutes 5 [--output benchmarks/results/fuzz-DATE.json] [-k EXPR]`.
Writes the JSON report (and pytest's output beside it as .txt), prints one line per property, and exits with
pytest's status: 0 when every property held for the whole time.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import shlex
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ElementTree
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TESTS = "tests/test_fuzz.py"
SELECT = "not crafted"


def _pytest(*args: str, env: dict[str, str] | None = None, log: Path | None = None) -> subprocess.CompletedProcess:
    """Runs pytest on TESTS from the repository root; its output captured, or written to `log`."""
    command = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", TESTS, *args]
    if log is None:
        return subprocess.run(command, cwd=ROOT, env=env, text=True, capture_output=True, check=False)
    with log.open("w") as out:
        return subprocess.run(command, cwd=ROOT, env=env, text=True, stdout=out, stderr=subprocess.STDOUT, check=False)


def properties(select: str) -> list[str]:
    """The test ids the run covers, from pytest's collection."""
    collected = _pytest("--collect-only", "-q", "-k", select)
    ids = [line for line in collected.stdout.splitlines() if line.startswith(TESTS + "::")]
    if not ids:
        raise SystemExit(f"fuzz: no test of {TESTS} matches -k {select!r}:\n{collected.stdout}{collected.stderr}")
    return ids


def outcomes(junit: Path) -> dict[str, str]:
    """Test name -> "passed", "failed" or "skipped", from pytest's JUnit XML."""
    found = {}
    for case in ElementTree.parse(junit).getroot().iter("testcase"):
        kinds = {child.tag for child in case}
        found[case.get("name")] = (
            "failed" if kinds & {"failure", "error"} else "skipped" if "skipped" in kinds else "passed"
        )
    return found


def run(minutes: float, output: Path, select: str) -> int:
    """Fuzzes for `minutes` in all, shared equally among the selected properties; writes `output`."""
    ids = properties(select)
    share = minutes * 60 / len(ids)
    with tempfile.TemporaryDirectory(prefix="tfpvae-fuzz-") as tmp:
        tally, junit = Path(tmp) / "tally.json", Path(tmp) / "junit.xml"
        env = {
            **os.environ,
            "HYPOTHESIS_PROFILE": "fuzz",
            "TFPVAE_FUZZ_SECONDS": str(share),
            "TFPVAE_FUZZ_REPORT": str(tally),
        }
        # Warnings (Pillow's decompression-bomb warning, numpy's casts of strange arrays) are expected
        # by the thousand here and would bury the summary.
        args = ["-q", "-k", select, "--hypothesis-profile", "fuzz", "-W", "ignore"]
        command = (
            f"HYPOTHESIS_PROFILE=fuzz TFPVAE_FUZZ_SECONDS={share:g} TFPVAE_FUZZ_REPORT=tally.json "
            f"python -m pytest -p no:cacheprovider {TESTS} {shlex.join(args)}"
        )
        started = datetime.datetime.now(datetime.timezone.utc)
        start = time.monotonic()
        log = output.with_suffix(".txt")
        status = _pytest(*args, f"--junitxml={junit}", env=env, log=log).returncode
        wall = time.monotonic() - start
        counts = json.loads(tally.read_text()) if tally.exists() else {}
        results = outcomes(junit) if junit.exists() else {}
    report = {
        "tool": "tools/fuzz.py",
        "started_utc": started.isoformat(timespec="seconds"),
        "command": f"python tools/fuzz.py --minutes {minutes:g}",
        "pytest_command": command,
        "minutes_requested": minutes,
        "seconds_per_property": round(share, 1),
        "wall_seconds": round(wall, 1),
        "pytest_exit_status": status,
        "total_cases": sum(c.get("cases", 0) for c in counts.values()),
        "properties": {
            test.split("::")[-1]: {
                "result": results.get(test.split("::")[-1], "not run"),
                **_summary(counts.get(test.split("::")[-1], {})),
            }
            for test in ids
        },
    }
    output.write_text(json.dumps(report, indent=2) + "\n")
    for name, entry in report["properties"].items():
        print(f"{entry['result']:7} {entry['cases']:7} cases {entry['runs']:4} runs {entry['seconds']:5} s  {name}")
    total = report["total_cases"]
    print(f"{total} cases in {wall:.0f} s; pytest exit status {status}; report {_rel(output)}, log {_rel(log)}")
    return status


def _summary(counts: dict[str, int]) -> dict[str, object]:
    """A property's counts split into cases, runs, seconds and outcomes (sorted by reader, then most frequent)."""
    fixed = {key: counts.get(key, 0) for key in ("cases", "runs", "seconds")}
    rest = sorted(((k, v) for k, v in counts.items() if k not in fixed), key=lambda kv: (kv[0].split(":")[0], -kv[1]))
    return {**fixed, "outcomes": dict(rest)}


def _rel(path: Path) -> str:
    path = path.resolve()
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=5.0, help="fuzzing time in all, shared by the properties")
    today = datetime.date.today().isoformat()
    parser.add_argument(
        "--output",
        type=Path,
        default=ROOT / "benchmarks" / "results" / f"fuzz-{today}.json",
        help="the JSON report (pytest's output goes beside it as .txt)",
    )
    parser.add_argument("-k", dest="select", default=SELECT, help=f"pytest -k expression (default {SELECT!r})")
    args = parser.parse_args(argv)
    if args.minutes <= 0:
        parser.error("--minutes must be > 0")
    return run(args.minutes, args.output, args.select)


if __name__ == "__main__":
    sys.exit(main())
