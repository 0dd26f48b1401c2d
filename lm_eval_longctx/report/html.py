"""report.html: report.md as one self-contained page (inline CSS, figures embedded as base64 PNG,
no script, nothing fetched), for a person to open in a browser.

Converts only the Markdown the report writes: headings, paragraphs, pipe tables, bullet lists,
images, ``code`` and **bold**. A figure that is missing is named in its place, never fetched.
"""

from __future__ import annotations

import base64
import html
import re
from pathlib import Path

STYLE = """
body { font: 15px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: #1d1f23; margin: 0;
       background: #f6f7f9; }
main { max-width: 1240px; margin: 0 auto; padding: 24px 32px 64px; background: #fff; }
h1 { font-size: 26px; margin: 8px 0 12px; } h2 { font-size: 21px; margin: 32px 0 8px; border-bottom: 2px solid #dde1e6;
     padding-bottom: 4px; } h3 { font-size: 17px; margin: 22px 0 6px; } h4 { font-size: 15px; margin: 16px 0 4px; }
p { margin: 6px 0 10px; } code { background: #eef0f3; padding: 1px 4px; border-radius: 3px; font-size: 13px; }
table { border-collapse: collapse; margin: 8px 0 16px; font-size: 13px; display: block; overflow-x: auto; }
th, td { border: 1px solid #d5d9de; padding: 4px 8px; text-align: left; vertical-align: top; }
th { background: #eef1f5; } tr:nth-child(even) td { background: #fafbfc; }
img { max-width: 100%; height: auto; border: 1px solid #e3e6ea; margin: 6px 0 14px; }
ul { margin: 6px 0 12px 20px; padding: 0; } li { margin: 3px 0; }
.missing { color: #a33; }
"""


def _inline(text: str) -> str:
    """Return one line's Markdown inline marks as HTML (escaped first: nothing in it is markup)."""
    text = html.escape(text, quote=False)
    text = re.sub(r"`([^`]+)`", r"<code>\1</code>", text)
    text = re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", text)
    return text.replace("\\|", "|")


def _image(alt: str, name: str, folder: Path) -> str:
    path = folder / name
    if path.suffix.lower() != ".png" or not path.is_file() or path.parent.resolve() != folder.resolve():
        return f'<p class="missing">figure not found: {html.escape(name)}</p>'
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'


IMAGE = re.compile(r"!\[([^\]]*)\]\(([^)]+)\)")


def _cells(line: str) -> list[str]:
    return [cell.strip() for cell in re.split(r"(?<!\\)\|", line.strip().strip("|"))]


def _block(block: list[str], folder: Path) -> str:
    first = block[0]
    if first.startswith("#"):
        level = len(first) - len(first.lstrip("#"))
        return f"<h{level}>{_inline(first[level:].strip())}</h{level}>"
    if first.startswith("|") and len(block) > 1 and set(block[1].replace("|", "").strip()) <= set("-: "):
        head = "".join(f"<th>{_inline(cell)}</th>" for cell in _cells(first))
        body = "".join("<tr>" + "".join(f"<td>{_inline(c)}</td>" for c in _cells(row)) + "</tr>" for row in block[2:])
        return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"
    if first.startswith("- "):
        items, current = [], []
        for line in block:
            if line.startswith("- ") and current:
                items.append(current)
                current = []
            current.append(line[2:] if line.startswith("- ") else line.strip())
        items.append(current)
        return "<ul>" + "".join("<li>" + _lines(item, folder) + "</li>" for item in items) + "</ul>"
    return _lines(block, folder, paragraph=True)


def _lines(lines: list[str], folder: Path, paragraph: bool = False) -> str:
    out, text = [], []
    for line in lines:
        match = IMAGE.fullmatch(line.strip())
        if match:
            if text:
                out.append(" ".join(text))
                text = []
            out.append(_image(match.group(1), match.group(2), folder))
        elif line.strip():
            text.append(_inline(line.strip()))
    if text:
        out.append(" ".join(text))
    if paragraph:
        return "".join(part if part.startswith("<") else f"<p>{part}</p>" for part in out)
    return "<br>".join(out)


def to_html(markdown: str, folder: Path, title: str) -> str:
    """Return the report's Markdown as a self-contained HTML page, figures from ``folder`` inlined."""
    blocks, block = [], []
    for line in markdown.splitlines():
        if not line.strip():
            if block:
                blocks.append(block)
            block = []
        elif line.startswith("#"):  # a heading is a block of its own
            if block:
                blocks.append(block)
            blocks.append([line])
            block = []
        else:
            block.append(line)
    if block:
        blocks.append(block)
    body = "\n".join(_block(b, folder) for b in blocks)
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{html.escape(title)}</title><style>{STYLE}</style></head>\n<body><main>\n{body}\n</main></body></html>\n"
    )
