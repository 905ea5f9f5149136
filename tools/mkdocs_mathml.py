"""MkDocs hook that renders the site's formulas to MathML when the site is built.

`pymdownx.arithmatex` (generic mode) finds `$...$` and `$$...$$` in the Markdown, leaving code blocks alone,
and wraps each formula in an element of class `arithmatex` holding `\\(...\\)` or `\\[...\\]`. This hook
replaces those elements with MathML from `latex2mathml`, which every current browser draws natively, so the
pages need no JavaScript and no network to show their math (the site is read offline too).
"""

from __future__ import annotations

import html
import re
from typing import Any

from latex2mathml.converter import convert

# arithmatex's generic output: <span class="arithmatex">\(x\)</span> inline, <div class="arithmatex">\[x\]</div>
# for display math. The LaTeX inside is HTML-escaped.
_FORMULA = re.compile(
    r'<(?P<tag>span|div) class="arithmatex">\s*\\(?P<open>[(\[])(?P<tex>.*?)\\[)\]]\s*</(?P=tag)>',
    re.DOTALL,
)


# A function name such as log written before its argument without brackets ("log p(x)", "log_2 p(x)"):
# latex2mathml sets the two side by side ("logp(x)"), where TeX puts a thin space. The space goes after the
# name, or after the whole <msub> when the name has a subscript (inside <msub> it would become the subscript).
_NAME = r"<mi>(?:log|ln|exp|det|sin|cos|tan)</mi>"
_FUNCTION_THEN_ARGUMENT = re.compile(
    rf"((?<!<msub>){_NAME}|<msub>{_NAME}<(mn|mi)>[^<]*</\2></msub>)(?!<mo stretchy=\"false\">&#x00028;)"
)


def to_mathml(match: re.Match) -> str:
    """Return the MathML for one arithmatex element (display math for `\\[...\\]`)."""
    tex = html.unescape(match.group("tex")).strip()
    display = "block" if match.group("open") == "[" else "inline"
    try:
        mathml = convert(tex, display=display)
    except Exception as err:  # a formula that does not parse must fail the (strict) build, naming itself
        raise ValueError(f"formula {tex!r} does not convert to MathML: {type(err).__name__} {err}") from err
    # latex2mathml passes a command it does not know through as text ("\\foo"): a reader would see it raw.
    unknown = re.search(r">(\\[A-Za-z]+)<", mathml)
    if unknown:
        raise ValueError(f"formula {tex!r} does not convert to MathML: unknown command {unknown.group(1)}")
    mathml = _FUNCTION_THEN_ARGUMENT.sub(r'\1<mspace width="0.1667em"></mspace>', mathml)
    if display == "block":
        return f'<div class="arithmatex">{mathml}</div>'
    return f'<span class="arithmatex">{mathml}</span>'


def on_page_content(html_text: str, **kwargs: Any) -> str:
    """MkDocs event: replace every formula of a page's HTML by its MathML."""
    return _FORMULA.sub(to_mathml, html_text)
