"""Markdown and HTML from a report's content, through the Jinja2 templates in `templates/`.

The content is a list of blocks, `(kind, ...)`: `("h1", text)`, `("h2", text)`, `("p", text)`,
`("list", items)`, `("img", file, caption)`, `("code", yaml)`, `("table", header, rows)`. Text
uses a little markdown (`code`, **bold**, *italic*, [link](url), <br>); the HTML template turns
it into tags (`inline`) and embeds figures from the report's folder (`png`).
"""

from __future__ import annotations

import base64
import re
from pathlib import Path

from jinja2 import Environment, FileSystemLoader, StrictUndefined
from markupsafe import Markup, escape

VERDICTS = ("better", "worse", "inconclusive", "supported", "contradicted", "degenerate")
TEMPLATES = Path(__file__).parent / "templates"


def inline(text) -> Markup:
    """The little markdown our text uses, as HTML; a verdict word in bold gets its colour class."""
    out = str(escape(str(text))).replace("&lt;br&gt;", "<br>")
    out = re.sub(r"`([^`]+)`", r"<code>\1</code>", out)
    out = re.sub(r"\*\*([^*]+)\*\*", lambda m: f'<b class="{m[1]}">{m[1]}</b>' if m[1] in VERDICTS else f"<b>{m[1]}</b>", out)
    out = re.sub(r"\*([^*]+)\*", r"<i>\1</i>", out)
    return Markup(re.sub(r"\[([^\]]+)\]\(([^)]+)\)", r'<a href="\2">\1</a>', out))


def _environment(autoescape: bool, folder: Path | None = None) -> Environment:
    env = Environment(loader=FileSystemLoader(TEMPLATES), autoescape=autoescape, trim_blocks=True, lstrip_blocks=True,
                      keep_trailing_newline=True, undefined=StrictUndefined)
    env.filters.update(cell=lambda c: str(c).replace("|", "\\|"), inline=inline,
                       png=lambda name: base64.b64encode((folder / name).read_bytes()).decode() if folder else "")
    return env


def render_markdown(blocks: list[tuple]) -> str:
    return _environment(autoescape=False).get_template("report.md.j2").render(blocks=blocks)


def render_html(blocks: list[tuple], folder: Path, title: str) -> str:
    return _environment(autoescape=True, folder=folder).get_template("report.html.j2").render(blocks=blocks, title=title)


def bold_verdict(line: str) -> str:
    """'l2 vs none (mnist): better, ...' -> the verdict word in bold (coloured by the HTML style)."""
    return re.sub(rf": ({'|'.join(VERDICTS)})\b", r": **\1**", line, count=1)
