"""The documentation site as a reader sees it: the checks of tools/check_site.py, proved on crafted pages, then
run on the built site; and the MathML hook of tools/mkdocs_mathml.py."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))

import check_site  # noqa: E402
import mkdocs_mathml  # noqa: E402

needs_mkdocs = pytest.mark.skipif(
    any(importlib.util.find_spec(m) is None for m in ("mkdocs", "mkdocstrings_handlers", "mkdocs_jupyter")),
    reason='the docs extra is not installed: pip install -e ".[docs]"',
)
needs_chromium = pytest.mark.skipif(check_site.find_chromium() is None, reason="no Chromium on PATH")

# A page in the shape Material writes: the text in <article class="md-content__inner ...">.
PAGE = """<!doctype html><html><head><meta charset="utf-8"><style>
.md-content {{ max-width: 600px; font: 16px sans-serif; }} pre > code {{ display: block; overflow: auto; }}
.md-typeset__scrollwrap {{ overflow-x: auto; }} td code {{ overflow-wrap: anywhere; }}
</style></head><body><nav>{nav}</nav><div class="md-content"><article class="md-content__inner md-typeset">
{body}
</article></div></body></html>"""
CLEAN = """<h1>Title</h1><p>Text with <code>code</code>, <strong>bold</strong> and a formula
<span class="arithmatex"><math><mi>x</mi></math></span>.</p>
<pre><code>&gt;&gt;&gt; model.sample(4).shape  # fine in a code block
(4, 28, 28, 1)</code></pre>
<ul><li>an item</li></ul><p><img src="img/a.png" alt="a"></p>"""
PNG = bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
    "1f15c4890000000d49444154789c6360000002000100e221bc330000000049454e44ae426082"
)


def write_site(root: Path, body: str, nav: str = "") -> Path:
    """A one-page site (index.html plus img/a.png) holding `body`."""
    (root / "img").mkdir(parents=True, exist_ok=True)
    (root / "img" / "a.png").write_bytes(PNG)
    (root / "index.html").write_text(PAGE.format(body=body, nav=nav), encoding="utf-8")
    return root


def test_a_clean_page_has_no_problems(tmp_path):
    site = write_site(tmp_path, CLEAN, nav="issue 12 in the navigation is not the page's text")
    assert check_site.static_problems(site) == []


@pytest.mark.parametrize(
    "body, expected",
    [
        ("<p>&gt;&gt;&gt; model.sample(4) (4, 8, 8, 1)</p>", "doctest prompt"),
        ("<blockquote><p>&gt;&gt;&gt; x = 1</p></blockquote>", "doctest prompt"),
        ("<ul><li><strong>*</strong> <strong>KL warm-up</strong></li></ul><p>**KL warm-up** (text)</p>", "'**'"),
        ("<p>Returns the <code>x</code> and `y` arrays.</p>", "backtick"),
        ("<p>Steps:\n* first\n* second</p>", "list marker"),
        ("<p>An image of H<em>W</em>C values.</p>", "emphasis inside a word"),
        ("<p>The loss is $$ -\\log p(x) $$ here.</p>", "TeX"),
        ('<p><span class="arithmatex">\\(x^2\\)</span></p>', "TeX"),
        ("<h2>Results (issue 5)</h2>", "issue number"),
        ("<p>Data from /work/shared/data/mnist.</p>", "development-checkout path"),
        ("<pre><code>" + "x" * 81 + "</code></pre>", "code line of 81 characters"),
        ('<p><img src="img/missing.png" alt="m"></p>', "'img/missing.png' does not exist"),
    ],
)
def test_each_kind_of_defect_is_found(tmp_path, body, expected):
    site = write_site(tmp_path, CLEAN + body)
    problems = check_site.static_problems(site)
    assert len(problems) == 1, problems
    assert expected in problems[0] and problems[0].startswith("index.html: ")


def test_code_lines_are_measured_against_the_column(tmp_path):
    site = write_site(tmp_path, "<pre><code>" + "x" * 80 + "\n" + "y" * 20 + "</code></pre>")
    assert check_site.static_problems(site) == []
    assert check_site.static_problems(site, code_columns=79)[0].endswith("xxxxxx...")


@needs_chromium
def test_the_browser_measures_what_the_html_cannot_say(tmp_path):
    wide_code = "<pre><code>" + "w" * 200 + "</code></pre>"
    wide_table = (
        '<div class="md-typeset__scrollwrap"><table><tr>'
        + "".join(f"<td>{'column' * 4}{i}</td>" for i in range(8))
        + "</tr></table></div>"
    )
    broken_name = '<table><tr><td style="width: 40px; max-width: 40px"><code>fashion_mnist</code></td></tr></table>'
    # Words of one piece of code on two lines are fine: only a word split inside itself is a defect.
    cell = "width: 70px; max-width: 70px; padding: 0; font: 10px monospace"
    two_words = f'<table><tr><td style="{cell}"><code>score --out FILE</code></td></tr></table>'
    site = write_site(tmp_path, CLEAN + wide_code + wide_table + broken_name + two_words + '<img src="img/gone.png">')
    problems = check_site.layout_problems(site, widths=(1280,))
    found = "\n".join(problems)
    assert "a code block is wider than the column at 1280 px: wwww" in found
    assert "a table is wider than the column at 1280 px" in found
    assert "'fashion_mnist' is broken over two lines in a table" in found
    assert "image img/gone.png does not load" in found
    assert len(problems) == 4, problems
    clean = write_site(tmp_path / "clean", CLEAN)
    assert check_site.layout_problems(clean, widths=(1280, 390)) == []


def test_a_function_name_is_spaced_from_its_argument_as_in_tex():
    out = mkdocs_mathml.on_page_content('<span class="arithmatex">\\(\\log p(x) = \\log(x)\\)</span>')
    assert out.count("<mi>log</mi>") == 2
    assert '<mi>log</mi><mspace width="0.1667em"></mspace><mi>p</mi>' in out  # log p: a thin space
    assert '<mi>log</mi><mo stretchy="false">&#x00028;</mo>' in out  # log(x): none, as in TeX
    subscript = mkdocs_mathml.on_page_content('<span class="arithmatex">\\(\\log_2 p\\)</span>')
    assert '<msub><mi>log</mi><mn>2</mn></msub><mspace width="0.1667em"></mspace><mi>p</mi>' in subscript


def test_formulas_become_mathml():
    html = (
        '<p>Inline <span class="arithmatex">\\(\\log p(x) \\ge \\mathrm{ELBO}\\)</span> and</p>\n'
        '<div class="arithmatex">\\[\\frac{1}{k} \\sum_{i=1}^{k} w_i &lt; 1\\]</div>'
    )
    out = mkdocs_mathml.on_page_content(html)
    assert "\\(" not in out and "\\[" not in out
    assert out.count("<math") == 2
    assert '<math xmlns="http://www.w3.org/1998/Math/MathML" display="block">' in out
    assert "<mfrac>" in out and "<mo>&#x0003C;</mo>" in out  # the escaped '<' reached latex2mathml as '<'


@pytest.mark.parametrize(
    "tex, why", [("\\frac{1}{", "NoAvailableTokensError"), ("x^", "Missing"), ("\\lgo p(x)", "unknown command \\lgo")]
)
def test_a_formula_that_does_not_convert_fails_the_build_naming_itself(tex, why):
    with pytest.raises(ValueError) as err:
        mkdocs_mathml.on_page_content(f'<span class="arithmatex">\\({tex}\\)</span>')
    assert str(err.value).startswith(f"formula {tex!r} does not convert to MathML: ") and why in str(err.value)


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """The documentation site, built once with mkdocs --strict (a warning, such as a broken link, fails it)."""
    out = tmp_path_factory.mktemp("site")
    proc = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
        timeout=300,
    )
    assert proc.returncode == 0, f"mkdocs build --strict failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-8000:]}"
    return out


@needs_mkdocs
@pytest.mark.slow
def test_the_site_builds_strict(site):
    assert (site / "api" / "model" / "index.html").is_file()


@needs_mkdocs
@pytest.mark.slow
def test_the_site_has_no_rendering_defects(site):
    assert check_site.static_problems(site) == []
    # Every page and notebook of the nav was built, and the site has math and pictures to check.
    assert len(check_site.pages(site)) >= 50
    assert len(check_site.pages(site, "tutorials/")) == len(list((ROOT / "notebooks").glob("*.ipynb")))
    html = "".join(p.read_text(encoding="utf-8") for p in check_site.pages(site))
    assert html.count("<math") >= 5 and html.count("<img") >= 10


@needs_mkdocs
@needs_chromium
@pytest.mark.slow
def test_the_site_fits_desktop_and_phone_screens(site):
    assert check_site.layout_problems(site) == []
