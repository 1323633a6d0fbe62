"""One self-contained HTML page from a report's Markdown and its figures: what MLflow's artifact
view previews, so a reviewer reads a run or a study in `mlflow ui` without opening five files.

The reports are written in a small part of Markdown (headings, paragraphs, bullet lists,
tables, **bold** and `code`); this renders that part, escaping everything else, and inlines
each figure as a base64 PNG so the page needs nothing beside it.
"""

from __future__ import annotations

import base64
import html
import re
from collections.abc import Iterable, Sequence
from pathlib import Path

STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 90em; padding: 0 1em;
       color: #222; line-height: 1.45; }
table { border-collapse: collapse; margin: 1em 0; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 0.3em 0.6em; text-align: left; vertical-align: top; }
th { background: #f3f3f3; }
figure { display: inline-block; margin: 0.5em 1em 1em 0; }
figure img { max-width: 100%; border: 1px solid #ddd; }
figcaption { font-size: 0.85em; color: #555; }
code { background: #f3f3f3; padding: 0 0.2em; }
"""


def _inline(text: str) -> str:
    """Escaped text with **bold** and `code`."""
    text = html.escape(text, quote=False)
    text = re.sub(r"`([^`]+)`", r"<code>\1</code>", text)
    return re.sub(r"\*\*([^*]+)\*\*", r"<strong>\1</strong>", text)


def _cells(line: str) -> list[str]:
    return [cell.strip() for cell in line.strip().strip("|").split("|")]


def _table(lines: Sequence[str]) -> str:
    header, rows = _cells(lines[0]), [_cells(line) for line in lines[2:]]
    head = "".join(f"<th>{_inline(cell)}</th>" for cell in header)
    body = "".join("<tr>" + "".join(f"<td>{_inline(cell)}</td>" for cell in row) + "</tr>"
                   for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _blocks(markdown: str) -> Iterable[str]:
    """The Markdown's blocks as HTML, in order."""
    lines = markdown.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        if not line.strip():
            i += 1
        elif heading := re.match(r"(#{1,4}) (.*)", line):  # deeper ones stay text
            level = len(heading.group(1))
            yield f"<h{level}>{_inline(heading.group(2))}</h{level}>"
            i += 1
        else:
            end = i
            kind = "table" if line.startswith("|") else "list" if line.startswith("- ") else "p"
            while end < len(lines) and lines[end].strip() \
                    and not re.match(r"#{1,4} ", lines[end]) \
                    and (kind != "p" or not lines[end].startswith(("|", "- "))):
                if kind == "list" and not lines[end].startswith(("- ", "  ")):
                    break
                end += 1
            block, i = lines[i:end], max(end, i + 1)
            if kind == "table":
                yield _table(block)
            elif kind == "list":
                yield "<ul>" + "".join(f"<li>{_inline(item)}</li>" for item in _items(block)) \
                    + "</ul>"
            else:
                yield f"<p>{_inline(' '.join(block))}</p>"


def _items(lines: Sequence[str]) -> list[str]:
    """A bullet list's items: '- ' starts one, an indented line continues it."""
    items: list[str] = []
    for line in lines:
        if line.startswith("- "):
            items.append(line[2:].strip())
        else:
            items[-1] += " " + line.strip()
    return items


def _figure(path: Path) -> str:
    data = base64.b64encode(Path(path).read_bytes()).decode("ascii")
    name = html.escape(Path(path).name)
    return (f'<figure><img alt="{name}" src="data:image/png;base64,{data}">'
            f"<figcaption>{name}</figcaption></figure>")


def html_page(title: str, markdown: str, figures: Sequence[Path] = ()) -> str:
    """The page: the Markdown rendered, then every figure that exists, inline."""
    shown = [_figure(path) for path in figures if Path(path).is_file()]
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>{html.escape(title)}</title><style>{STYLE}</style></head><body>\n"
            + "\n".join(_blocks(markdown))
            + ("\n<h2>Figures</h2>\n" + "\n".join(shown) if shown else "")
            + "\n</body></html>\n")


def markdown_table(header: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    """A Markdown table (what html_page renders as a table); cells as text, '|' escaped."""
    def cell(value: object) -> str:
        if isinstance(value, float):  # 3 significant digits, never in e-notation (2.59e+03)
            text = f"{value:.0f}" if abs(value) >= 100 else f"{value:.3g}"
        else:
            text = str(value)
        return text.replace("|", "\\|")

    lines = ["| " + " | ".join(map(cell, header)) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(map(cell, row)) + " |" for row in rows]
    return "\n".join(lines) + "\n"
