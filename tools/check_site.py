"""Check a built documentation site for the defects a reader sees at once.

Two kinds of check, each returning one line per problem (`page: what`):

* `static_problems` reads the HTML: doctest prompts (`>>>`) or raw Markdown (`**`, backticks, `* ` list
  markers, emphasis inside a word) in the text instead of code blocks, formulas left as TeX instead of MathML,
  images whose file is missing, code lines longer than the text column holds, and notes meant for developers
  (issue numbers, paths of a development checkout).
* `layout_problems` opens every page in headless Chromium at a desktop and a phone width and measures what the
  HTML cannot say: code blocks and tables wider than the column at 1280 px, names in table cells broken over two
  lines, images that do not load, and pages that scroll sideways on a phone.

Usage (exit status 1 when anything is found):

    mkdocs build --strict --site-dir site && python tools/check_site.py site
"""

from __future__ import annotations

import argparse
import functools
import html
import http.server
import json
import re
import shutil
import subprocess
import sys
import tempfile
import threading
from html.parser import HTMLParser
from pathlib import Path

# The text column at 1280 px holds 80 characters of code (measured in Chromium with Material's fonts).
CODE_COLUMNS = 80
DESKTOP, PHONE = 1280, 390
# Notes for developers that have no place on a user's page.
DEVELOPER_NOTES = {
    "an issue number": re.compile(r"\bissues? #?\d+\b", re.IGNORECASE),
    "a development-checkout path": re.compile(r"/work/|/tmp/ci\b|\.\./shared/data/(?!\S*\bREADME)"),
}
RAW_MARKDOWN = {
    "a doctest prompt '>>>' outside a code block": re.compile(r">>>"),
    "raw '**' (Markdown bold that did not render)": re.compile(r"\*\*\S"),
    "a raw backtick (Markdown code that did not render)": re.compile(r"`[^`\s][^`]*`"),
    "a raw '* ' list marker": re.compile(r"(^|\n)\s*\* \S"),
    "TeX that was not rendered": re.compile(r"\$\$|\\\(|\\\[|\\frac|\\mathbb"),
}
# Elements whose text is code or otherwise not prose.
_CODE_TAGS = {"pre", "code", "script", "style", "math", "kbd", "samp", "textarea", "svg"}
_SKIP_PAGES = ("search/", "404.html")


class _PageParser(HTMLParser):
    """Collects a page's prose text, code-block lines and image sources."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.prose: list[str] = []
        self.code_lines: list[str] = []
        self.images: list[str] = []
        self._code_depth = 0
        self._pre: list[str] | None = None
        self._pre_depth = 0

    def handle_starttag(self, tag: str, attrs: list) -> None:
        if tag == "img":
            self.images.append(dict(attrs).get("src") or "")
        if tag in _CODE_TAGS:
            self._code_depth += 1
        if tag == "pre":
            self._pre_depth += 1
            if self._pre_depth == 1:
                self._pre = []

    def handle_endtag(self, tag: str) -> None:
        if tag in _CODE_TAGS and self._code_depth:
            self._code_depth -= 1
        if tag == "pre" and self._pre_depth:
            self._pre_depth -= 1
            if self._pre_depth == 0 and self._pre is not None:
                self.code_lines.extend("".join(self._pre).splitlines())
                self._pre = None

    def handle_data(self, data: str) -> None:
        if self._pre is not None:
            self._pre.append(data)
        elif not self._code_depth:
            self.prose.append(data)


def pages(site: Path, only: str = "") -> list[Path]:
    """Every HTML page of a built site whose path contains `only`, except the search index and the 404 page."""
    found = []
    for path in sorted(site.rglob("*.html")):
        rel = path.relative_to(site).as_posix()
        if not rel.startswith(_SKIP_PAGES) and only in rel:
            found.append(path)
    return found


def _main_content(text: str) -> str:
    """The page's article (Material's `md-content`), without navigation, header, footer and the hidden copies
    of notebook cells that their copy buttons use."""
    start = text.find('<article class="md-content__inner')
    end = text.rfind("</article>")
    article = text[start:end] if 0 <= start < end else text
    return re.sub(r'<div class="clipboard-copy-txt"[^>]*>.*?</div>', "", article, flags=re.DOTALL)


def static_problems(site: str | Path, code_columns: int = CODE_COLUMNS, only: str = "") -> list[str]:
    """Problems found in the HTML of every page of a built site.

    Args:
        site: the folder `mkdocs build` wrote.
        code_columns: the most characters a code-block line may have. Default 80.
        only: check only the pages whose path (relative to `site`) contains this. Default all.

    Returns:
        One line per problem, `page: what`, with an excerpt; empty when the site is clean.
    """
    site = Path(site)
    problems = []
    for path in pages(site, only):
        rel = path.relative_to(site).as_posix()
        article = _main_content(path.read_text(encoding="utf-8"))
        parser = _PageParser()
        parser.feed(article)
        prose = html.unescape("".join(parser.prose))
        for what, pattern in {**RAW_MARKDOWN, **DEVELOPER_NOTES}.items():
            match = pattern.search(prose)
            if match:
                excerpt = prose[max(0, match.start() - 40) : match.end() + 40].replace("\n", " ")
                problems.append(f"{rel}: {what}: ...{excerpt.strip()}...")
        # Notebook pages are checked by width in the browser: their code cells sit beside an "In [n]:" prompt.
        if "jp-Notebook" not in article:
            for line in parser.code_lines:
                if len(line) > code_columns:
                    problems.append(f"{rel}: a code line of {len(line)} characters (> {code_columns}): {line[:60]}...")
                    break
        # `H*W*C` or `a_b_c` outside code turns into H<em>W</em>C: emphasis that starts or ends inside a word.
        match = re.search(r"\w<em>|</em>\w", article)
        if match:
            excerpt = article[match.start() - 30 : match.end() + 30]
            problems.append(f"{rel}: emphasis inside a word (Markdown * or _ outside code): {excerpt!r}")
        for src in parser.images:
            if src.startswith(("data:", "http://", "https://")):
                continue
            target = (path.parent / src.split("#")[0].split("?")[0]).resolve()
            if not target.is_file():
                problems.append(f"{rel}: image {src!r} does not exist")
    return problems


# Runs in the browser: loads each page into an iframe of the given width and measures it.
_DRIVER = """<!doctype html><html><body><pre id="out"></pre><script>
const pages = %(pages)s, widths = %(widths)s, found = [];
function measure(doc, win, width) {
  const out = [], main = doc.querySelector('.md-content') || doc.body;
  if (doc.documentElement.scrollWidth > win.innerWidth + 1)
    out.push(`scrolls sideways at ${width} px (${doc.documentElement.scrollWidth} px wide)`);
  for (const img of doc.images)
    if (img.complete && img.naturalWidth === 0) out.push(`image ${img.getAttribute('src')} does not load`);
    else if (main.contains(img) && img.getBoundingClientRect().right > main.getBoundingClientRect().right + 1)
      out.push(`image ${img.getAttribute('src')} is wider than the column at ${width} px`);
  if (width < 1000) return out;
  for (const pre of main.querySelectorAll('pre')) {
    if (pre.closest('.jp-OutputArea')) continue;
    // Material scrolls the <code> inside the <pre>; other code blocks scroll the <pre> itself.
    if ([pre, ...pre.querySelectorAll(':scope > code')].some(el => el.scrollWidth > el.clientWidth + 1)) {
      const line = pre.textContent.split('\\n').reduce((a, b) => (b.length > a.length ? b : a), '');
      out.push(`a code block is wider than the column at ${width} px: ${line.slice(0, 60)}...`);
    }
  }
  for (const el of main.querySelectorAll('.md-typeset__scrollwrap, .md-typeset__table'))
    if (el.scrollWidth > el.clientWidth + 1)
      out.push(`a table is wider than the column at ${width} px (${el.scrollWidth} > ${el.clientWidth} px): ` +
               `${(el.querySelector('tr') || el).textContent.trim().replace(/\\s+/g, ' ').slice(0, 60)}`);
  // A name in a table cell must not break inside itself (between words is fine).
  for (const el of main.querySelectorAll('td code, th code')) {
    if (el.getClientRects().length < 2) continue;
    const walker = doc.createTreeWalker(el, NodeFilter.SHOW_TEXT);
    for (let node = walker.nextNode(); node; node = walker.nextNode())
      for (const token of node.data.matchAll(/\\S+/g)) {
        const range = doc.createRange();
        range.setStart(node, token.index); range.setEnd(node, token.index + token[0].length);
        if (range.getClientRects().length > 1) out.push(`'${token[0]}' is broken over two lines in a table`);
      }
  }
  return out;
}
async function run() {
  const frame = document.createElement('iframe');
  document.body.appendChild(frame);
  for (const width of widths) {
    frame.style.width = width + 'px'; frame.style.height = '900px';
    for (const page of pages) {
      await new Promise(done => { frame.onload = done; frame.src = page; });
      await new Promise(done => setTimeout(done, 50));
      await frame.contentDocument.fonts.ready;
      for (const what of measure(frame.contentDocument, frame.contentWindow, width)) found.push(page + ': ' + what);
    }
  }
  document.getElementById('out').textContent = 'RESULT' + JSON.stringify(found) + 'END';
  document.title = 'measured in ' + (performance.now() / 1000).toFixed(1) + ' s';
}
run();
</script></body></html>"""


def find_chromium() -> str | None:
    """The path of a Chromium or Chrome executable, or None."""
    for name in ("chromium", "chromium-browser", "google-chrome", "chrome"):
        found = shutil.which(name)
        if found:
            return found
    return None


def layout_problems(
    site: str | Path, widths: tuple[int, ...] = (DESKTOP, PHONE), browser: str | None = None, only: str = ""
) -> list[str]:
    """Problems measured by opening every page of a built site in headless Chromium.

    Args:
        site: the folder `mkdocs build` wrote.
        widths: window widths in px. At widths of 1000 px or more code blocks, tables and table cells are
            measured against the column; at every width the page must not scroll sideways and its images must
            load and fit. Default (1280, 390).
        browser: the Chromium executable; default the first found on PATH.
        only: check only the pages whose path (relative to `site`) contains this. Default all.

    Returns:
        One line per problem, `page: what`; empty when the site is clean.

    Raises:
        FileNotFoundError: no Chromium was found.
        RuntimeError: the browser did not report its measurements.
    """
    site = Path(site)
    browser = browser or find_chromium()
    if browser is None:
        raise FileNotFoundError("no chromium on PATH: install Chromium to check the layout")
    urls = ["/" + p.relative_to(site).as_posix() for p in pages(site, only)]
    handler = functools.partial(_QuietHandler, directory=str(site))
    with http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler) as server:
        threading.Thread(target=server.serve_forever, daemon=True).start()
        driver = site / "__layout_check__.html"
        driver.write_text(_DRIVER % {"pages": json.dumps(urls), "widths": json.dumps(list(widths))})
        try:
            with tempfile.TemporaryDirectory() as profile:
                proc = subprocess.run(
                    [browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                     f"--user-data-dir={profile}", "--window-size=1400,1000",
                     # Only the local server: a request to the internet would hang until it timed out.
                     "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1", "--virtual-time-budget=900000",
                     "--dump-dom", f"http://127.0.0.1:{server.server_port}/__layout_check__.html"],
                    capture_output=True, text=True, timeout=900,
                )  # fmt: skip
        finally:
            driver.unlink()
            server.shutdown()
    match = re.search(r'<pre id="out">RESULT(.*?)END</pre>', html.unescape(proc.stdout), re.DOTALL)
    if match is None:
        raise RuntimeError(f"the browser reported nothing (exit {proc.returncode}): {proc.stderr[-2000:]}")
    return json.loads(match.group(1))


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args: object) -> None:  # the page loads are not news
        pass


def main(argv: list[str] | None = None) -> int:
    """Print every problem of a built site; exit status 1 when there is one."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("site", type=Path, help="the folder mkdocs build wrote")
    parser.add_argument("--no-browser", action="store_true", help="only the checks of the HTML")
    parser.add_argument("--only", default="", help="only the pages whose path contains this")
    args = parser.parse_args(argv)
    problems = static_problems(args.site, only=args.only)
    if not args.no_browser:
        problems += layout_problems(args.site, only=args.only)
    for line in problems:
        print(line)
    print(f"{len(problems)} problem(s) in {len(pages(args.site, args.only))} pages", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
