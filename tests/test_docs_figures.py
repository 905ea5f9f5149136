"""tools/docs_figures.py draws every figure of the docs, and the docs show only its figures.

(a) The pages reference only images in docs/img that the script writes (its `FIGURES`),
    and docs/img holds nothing else, each file small enough to keep in git.
(b) `python tools/docs_figures.py --quick` writes every file of `FIGURES`, each a PNG or an
    animated GIF of a sensible size with real contrast (not a blank canvas).
"""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "tools" / "docs_figures.py"
DOCS = ROOT / "docs"
IMG = DOCS / "img"
# An image path in a page: markdown `![alt](img/x.png)` or HTML `src="img/x.png"`, from any depth.
_IMAGE_REF = re.compile(r"""[("'](?:\.\./)*(img/[^)"'\s]+)""")
MAX_PNG_BYTES, MAX_GIF_BYTES, MAX_TOTAL_BYTES = 150_000, 200_000, 2_000_000


def script_figures() -> dict[str, str]:
    """The script's `FIGURES` (file name -> what it shows), read without running the script."""
    for node in ast.parse(SCRIPT.read_text()).body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "FIGURES" for t in node.targets):
            return ast.literal_eval(node.value)
    raise AssertionError(f"{SCRIPT} defines no FIGURES")


def referenced_images() -> dict[str, list[str]]:
    """img/... path -> the pages that show it, over docs/**/*.md."""
    refs: dict[str, list[str]] = {}
    for page in sorted(DOCS.rglob("*.md")):
        for ref in _IMAGE_REF.findall(page.read_text()):
            refs.setdefault(ref, []).append(str(page.relative_to(DOCS)))
    return refs


def test_docs_show_only_the_script_figures():
    figures = script_figures()
    refs = referenced_images()
    assert refs, "no page shows an image from docs/img"
    for ref, pages in refs.items():
        name = ref.removeprefix("img/")
        assert name in figures, f"{ref} (in {pages}) is not written by tools/docs_figures.py"
        assert (IMG / name).is_file(), f"{ref} (in {pages}) is missing: run python tools/docs_figures.py"
    stale = sorted(p.name for p in IMG.iterdir() if p.name not in figures)
    assert not stale, f"docs/img holds files the script does not write: {stale}"


def test_docs_images_are_small():
    total = 0
    for name in script_figures():
        path = IMG / name
        assert path.is_file(), f"{path} is missing: run python tools/docs_figures.py"
        size = path.stat().st_size
        limit = MAX_GIF_BYTES if name.endswith(".gif") else MAX_PNG_BYTES
        assert size <= limit, f"{name} is {size} bytes, over {limit}"
        total += size
    assert total <= MAX_TOTAL_BYTES, f"docs/img holds {total} bytes"


def check_picture(path: Path) -> None:
    """`path` decodes as a PNG (or an animated GIF) of a sensible size with real contrast."""
    with Image.open(path) as image:
        assert image.format == ("GIF" if path.suffix == ".gif" else "PNG"), f"{path.name}: {image.format}"
        assert 200 <= image.width <= 2000 and 150 <= image.height <= 2000, f"{path.name}: {image.size}"
        frames = []
        for i in range(getattr(image, "n_frames", 1)):
            image.seek(i)
            frames.append(np.asarray(image.convert("L"), dtype=np.float64))
    for grey in frames:
        # A blank canvas is one grey; a figure has ink on paper: dark and light, and spread.
        assert grey.max() - grey.min() > 150 and grey.std() > 10, f"{path.name}: no contrast"
        assert (grey < 128).mean() > 0.005, f"{path.name}: almost no dark pixels"
    if path.suffix == ".gif":
        assert len(frames) >= 2, f"{path.name}: not animated"
        assert any(np.abs(f - frames[0]).max() > 0 for f in frames[1:]), f"{path.name}: frames all equal"


@pytest.mark.slow
def test_quick_run_writes_every_figure(tmp_path):
    env = {**os.environ, "MPLBACKEND": "Agg", "TF_CPP_MIN_LOG_LEVEL": "2"}
    out = tmp_path / "img"
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--quick", "--out", str(out)],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    figures = script_figures()
    assert sorted(p.name for p in out.iterdir()) == sorted(figures)
    for name in figures:
        check_picture(out / name)


def test_committed_figures_decode():
    for name in script_figures():
        if (IMG / name).is_file():
            check_picture(IMG / name)
