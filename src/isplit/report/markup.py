"""The report's HTML pieces: escaping, numbers, tables, embedded images, sections, and the page
with its inline style sheet (no network, no JavaScript)."""

from __future__ import annotations

import base64
import datetime
import html
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from isplit import texttable

#: A section of the page: (id, title, HTML).
Section = tuple[str, str, str]


def esc(v: object) -> str:
    return html.escape(str(v))


def img(png: bytes, alt: str, cls: str = "fig") -> str:
    data = base64.b64encode(png).decode("ascii")
    return f'<img class="{cls}" alt="{esc(alt)}" src="data:image/png;base64,{data}">'


def png_from(draw: Callable[[Path], None]) -> bytes:
    """PNG bytes from a plotting function that writes to a path."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "figure.png"
        draw(path)
        return path.read_bytes()


def shape_text(shape: Sequence[int]) -> str:
    return "×".join(map(str, shape[1:] if len(shape) > 1 else shape))


def num(v: float | None, fmt: str = ".3f") -> str:
    return "n/a" if v is None or (isinstance(v, float) and not np.isfinite(v)) else format(v, fmt)


def pct(v: float | None) -> str:
    return "n/a" if v is None else f"{100 * v:.1f} %"


def pp(v: float | None) -> str:
    """A difference of accuracies, in percentage points."""
    return "n/a" if v is None else f"{100 * v:.1f} pp"


def log10_cui(c: float | None, fmt: str = ".3f") -> str:
    """:func:`isplit.texttable.log10_cui` with "−∞" where the CUI is 0 (HTML)."""
    return texttable.log10_cui(c, fmt, zero="−∞")


def section(sid: str, title: str, body: str) -> Section:
    return sid, title, f'<section id="{sid}">\n<h2>{esc(title)}</h2>\n{body}\n</section>'


def table(header: list[str], rows: list[tuple[str, list[str]]], cls: str = "") -> str:
    """rows: (css class of the row, cells already escaped)."""
    head = "".join(f"<th>{h}</th>" for h in header)
    body = "\n".join(
        f'<tr class="{c}">' + "".join(f"<td>{cell}</td>" for cell in cells) + "</tr>"
        for c, cells in rows
    )
    return f'<table class="{cls}"><thead><tr>{head}</tr></thead><tbody>\n{body}\n</tbody></table>'


CSS = """
body { font: 15px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: #222;
       margin: 0; background: #f6f7f9; }
main { max-width: 1280px; margin: 0 auto; padding: 1.5rem 2rem 3rem; background: #fff; }
h1 { font-size: 1.6rem; margin: 0 0 .3rem; }
h2 { font-size: 1.25rem; border-bottom: 2px solid #dde; padding-bottom: .2rem;
     margin-top: 2.2rem; }
h3 { font-size: 1.05rem; margin-top: 1.5rem; }
nav { font-size: .9rem; margin: .5rem 0 1rem; }
nav a { margin-right: 1rem; color: #2457a6; text-decoration: none; }
.sub { color: #666; margin: 0; }
img.fig { display: block; max-width: 100%; height: auto; margin: .8rem 0;
          border: 1px solid #e3e3e8; }
table { border-collapse: collapse; margin: .6rem 0; font-size: .88rem; }
th, td { padding: .25rem .6rem; border-bottom: 1px solid #e6e6ea; text-align: left; }
thead th { background: #eef0f4; position: sticky; top: 0; }
table.num td { font-variant-numeric: tabular-nums; }
table.points td:nth-child(n+4):nth-child(-n+7) { text-align: right; }
table.facts th { width: 9rem; color: #555; font-weight: 600; vertical-align: top; }
tr.inadmissible td { color: #aaa; }
tr.candidate td { background: #fff7e0; }
tr.best td { background: #ffe3dc; font-weight: 600; }
tr.differs td { background: #f3f6ff; }
tr.ours td { background: #eef6ee; font-weight: 600; }
code { font: .85rem ui-monospace, SFMono-Regular, Menlo, monospace; }
.recommendation { font-size: 1.05rem; background: #eef6ee; border-left: 4px solid #3a9a3a;
                  padding: .6rem .9rem; }
.note { background: #f4f4f6; border-left: 4px solid #aab; padding: .5rem .8rem; }
.warn { background: #fff4e5; border-left: 4px solid #e08a00; padding: .5rem .8rem; }
.checks { font-size: 1.05rem; border-left-color: #c0392b; background: #fdecea; }
.checks ul { margin: .2rem 0 .2rem 1.2rem; padding: 0; }
.flag { color: #c0392b; font-weight: 600; }
tr.unlearned td, tr.unreliable td { color: #a05a00; font-style: italic; }
footer { color: #888; font-size: .8rem; margin-top: 2.5rem; }
"""


def page(title: str, sections: list[Section]) -> str:
    """The whole page: title, navigation, the sections, a footer."""
    from isplit import __version__

    nav = " ".join(f'<a href="#{sid}">{esc(t)}</a>' for sid, t, _ in sections)
    now = datetime.datetime.now().strftime("%Y-%m-%d %H:%M")
    body = "\n".join(s for _, _, s in sections)
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{esc(title)}</title>
<style>{CSS}</style>
</head>
<body>
<main>
<h1>{esc(title)}</h1>
<p class="sub">Where to cut the network for split computing (I-SPLIT: Grad-CAM importance of
every split point).</p>
<nav>{nav}</nav>
{body}
<footer>Generated by isplit {esc(__version__)} on {now}. I-SPLIT: Cunico, Capogrosso, Setti, Carra,
Fummi, Cristani, ICPR 2022.</footer>
</main>
</body>
</html>
"""
