"""The report as plain blocks, rendered twice: Markdown (report.md) and self-contained HTML (report.html).

Sections build blocks once; the two renderers never disagree on content. Text may use `code` and
**bold**; everything else is escaped. The HTML embeds its CSS and every image as a base64 data URI,
loads nothing from anywhere, and runs no script.
"""

from __future__ import annotations

import base64
import html
import re
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class Para:
    text: str
    kind: str = ""
    """"" | warn (a disagreement or a claim to doubt) | missing (a stage or file that is not there)."""


@dataclass
class Bullets:
    items: list[str]


@dataclass
class Table:
    header: list[str]
    rows: list[list[str]]


@dataclass
class Image:
    path: str
    """Relative to the report's directory (plots/<name>.png)."""
    caption: str


@dataclass
class Code:
    text: str
    lang: str = ""


@dataclass
class Section:
    anchor: str
    title: str
    blocks: list = field(default_factory=list)
    level: int = 2


@dataclass
class Document:
    title: str
    subtitle: str
    sections: list[Section]
    lang: str

    def count(self, kind: type) -> int:
        return sum(isinstance(b, kind) for s in self.sections for b in s.blocks)


_CODE_SPAN = re.compile(r"(`[^`]+`)")


def _md_text(s: str) -> str:
    """Escape `<` outside code spans so an answer like '血糖<7' or '<think>' is shown, not parsed as HTML."""
    return "".join(p if p.startswith("`") and p.endswith("`") and len(p) > 1 else p.replace("<", "&lt;")
                   for p in _CODE_SPAN.split(s))


def _md_cell(s: str) -> str:
    return _md_text(s).replace("|", "\\|").replace("\r", "").replace("\n", "<br>")


def to_markdown(doc: Document) -> str:
    out = [f"# {_md_text(doc.title)}", "", _md_text(doc.subtitle), ""]
    for s in doc.sections:
        out += ["#" * s.level + " " + _md_text(s.title), ""]
        for b in s.blocks:
            if isinstance(b, Para):
                text = _md_text(b.text)
                out += [f"> ⚠ {text}" if b.kind == "warn" else f"*{text}*" if b.kind == "missing" else text, ""]
            elif isinstance(b, Bullets):
                out += [f"- {_md_text(item)}" for item in b.items] + [""]
            elif isinstance(b, Table):
                out.append("| " + " | ".join(_md_cell(h) for h in b.header) + " |")
                out.append("|" + "|".join(" --- " for _ in b.header) + "|")
                out += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in b.rows]
                out.append("")
            elif isinstance(b, Image):
                out += [f"![{_md_text(b.caption)}]({b.path})", ""]
            elif isinstance(b, Code):
                fence = "~~~~" if "```" in b.text else "```"
                out += [fence + b.lang, b.text.rstrip("\n"), fence, ""]
    return "\n".join(out).rstrip("\n") + "\n"


def _inline_html(s: str) -> str:
    parts = []
    for p in _CODE_SPAN.split(s):
        if p.startswith("`") and p.endswith("`") and len(p) > 1:
            parts.append(f"<code>{html.escape(p[1:-1])}</code>")
        else:
            escaped = html.escape(p)
            parts.append(re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", escaped).replace("\n", "<br>"))
    return "".join(parts)


CJK_FONTS = ("PingFang SC", "Hiragino Sans GB", "Microsoft YaHei", "Noto Sans CJK SC", "Source Han Sans SC",
             "Noto Sans SC", "WenQuanYi Micro Hei")
"""The common Simplified Chinese UI fonts of macOS, Windows and Linux desktops, in order of preference. The
page names them before any Latin font, so Chinese never falls to a font without its glyphs; plots pick the
first one installed."""
_CSS = """
:root { --fg: #1d2430; --muted: #5b6472; --line: #d9dee5; --warn-bg: #fff4e0; --warn: #b45309;
        --head: #f3f5f8; --accent: #0f5e9c; }
* { box-sizing: border-box; }
body { margin: 0; color: var(--fg); background: #fff; line-height: 1.6;
       font: 15px/1.6 CJK_FONTS, -apple-system, "Segoe UI", Roboto, Helvetica, Arial, sans-serif; }
main { max-width: 1080px; margin: 0 auto; padding: 24px 28px 64px; }
h1 { font-size: 26px; margin: 8px 0 4px; }
h2 { font-size: 20px; margin: 36px 0 10px; padding-bottom: 4px; border-bottom: 2px solid var(--line); }
h3 { font-size: 16px; margin: 22px 0 8px; }
.subtitle { color: var(--muted); margin: 0 0 16px; }
nav { background: var(--head); border: 1px solid var(--line); border-radius: 6px; padding: 8px 14px;
      margin: 12px 0 8px; font-size: 14px; }
nav a { color: var(--accent); text-decoration: none; margin-right: 14px; white-space: nowrap; }
.scroll { overflow-x: auto; margin: 8px 0 14px; }
table { border-collapse: collapse; font-size: 13.5px; min-width: 40%; }
th, td { border: 1px solid var(--line); padding: 5px 9px; text-align: left; vertical-align: top; }
th { background: var(--head); font-weight: 600; }
td { font-variant-numeric: tabular-nums; }
tr:nth-child(even) td { background: #fafbfc; }
p.warn { background: var(--warn-bg); border-left: 4px solid var(--warn); padding: 8px 12px; border-radius: 4px; }
p.missing { color: var(--muted); font-style: italic; }
figure { margin: 12px 0 18px; }
figure img { max-width: 100%; height: auto; border: 1px solid var(--line); border-radius: 4px; }
figcaption { color: var(--muted); font-size: 13px; }
code { background: var(--head); padding: 1px 4px; border-radius: 3px; font-size: 90%; }
pre { background: var(--head); border: 1px solid var(--line); border-radius: 4px; padding: 10px 12px;
      overflow-x: auto; font-size: 12.5px; line-height: 1.45; }
ul { padding-left: 22px; }
li { margin: 4px 0; }
"""
CSS = _CSS.replace("CJK_FONTS", ", ".join(f'"{name}"' for name in CJK_FONTS))


def to_html(doc: Document, base_dir: Path) -> str:
    """Self-contained HTML; images are read from base_dir / image.path and embedded."""
    nav = " ".join(f'<a href="#{s.anchor}">{_inline_html(s.title)}</a>' for s in doc.sections if s.level == 2)
    body = [f"<h1>{_inline_html(doc.title)}</h1>", f'<p class="subtitle">{_inline_html(doc.subtitle)}</p>',
            f"<nav>{nav}</nav>"]
    for s in doc.sections:
        body.append(f'<h{s.level} id="{s.anchor}">{_inline_html(s.title)}</h{s.level}>')
        for b in s.blocks:
            if isinstance(b, Para):
                cls = f' class="{b.kind}"' if b.kind else ""
                body.append(f"<p{cls}>{'⚠ ' if b.kind == 'warn' else ''}{_inline_html(b.text)}</p>")
            elif isinstance(b, Bullets):
                body.append("<ul>" + "".join(f"<li>{_inline_html(i)}</li>" for i in b.items) + "</ul>")
            elif isinstance(b, Table):
                head = "".join(f"<th>{_inline_html(h)}</th>" for h in b.header)
                rows = "".join("<tr>" + "".join(f"<td>{_inline_html(c)}</td>" for c in row) + "</tr>"
                               for row in b.rows)
                body.append(f'<div class="scroll"><table><thead><tr>{head}</tr></thead>'
                            f"<tbody>{rows}</tbody></table></div>")
            elif isinstance(b, Image):
                data = base64.b64encode((base_dir / b.path).read_bytes()).decode("ascii")
                alt = html.escape(b.caption, quote=True)
                body.append(f'<figure><img src="data:image/png;base64,{data}" alt="{alt}">'
                            f"<figcaption>{_inline_html(b.caption)}</figcaption></figure>")
            elif isinstance(b, Code):
                body.append(f"<pre><code>{html.escape(b.text)}</code></pre>")
    lang = "zh-CN" if doc.lang == "zh" else "en"
    return (f'<!DOCTYPE html>\n<html lang="{lang}">\n<head>\n<meta charset="utf-8">\n'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">\n'
            f"<title>{html.escape(doc.title)}</title>\n<style>{CSS}</style>\n</head>\n<body>\n<main>\n"
            + "\n".join(body) + "\n</main>\n</body>\n</html>\n")
