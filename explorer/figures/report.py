"""A page saved as one self-contained HTML file: headings, captions, figures, tables and text.

The file opens offline: plotly.js is embedded once, inline, before the first figure (never a
CDN), and every figure is drawn from its own JSON. All user text (title, headings, captions,
text sections, table cells) is escaped, so a pasted text can neither change the page nor run
a script; plotly's JSON escapes "</" itself.
"""
from __future__ import annotations

import html
from typing import Union

import pandas as pd
import plotly.graph_objects as go
import plotly.offline

Content = Union[go.Figure, pd.DataFrame, str]
Section = tuple[str, str, Content]  # (heading, caption, content); empty heading or caption: none

STYLE = """body { font-family: system-ui, sans-serif; max-width: 1100px; margin: 2em auto; color: #222; }
h1 { font-size: 1.6em; } h2 { font-size: 1.25em; margin-top: 2em; }
p.caption { color: #555; } pre.text { white-space: pre-wrap; font-family: Georgia, serif; }
table { border-collapse: collapse; } th, td { padding: 0.2em 0.6em; border-bottom: 1px solid #ddd; }"""


def html_report(title: str, sections: list[Section]) -> str:
    """The whole report as one HTML document (str); content: a plotly figure, a DataFrame, or text."""
    body = "\n".join(_section(*section) for section in sections)
    return (f'<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
            f"<title>{html.escape(title)}</title>\n<style>{STYLE}</style>\n"
            f'<script type="text/javascript">{plotly.offline.get_plotlyjs()}</script>\n</head>\n'
            f"<body>\n<h1>{html.escape(title)}</h1>\n{body}\n</body>\n</html>\n")


def _section(heading: str, caption: str, content: Content) -> str:
    parts = [f"<h2>{html.escape(heading)}</h2>"] if heading else []
    if caption:
        parts.append(f'<p class="caption">{html.escape(caption)}</p>')
    parts.append(_content(content))
    return f"<section>\n{chr(10).join(parts)}\n</section>"


def _content(content: Content) -> str:
    if isinstance(content, go.Figure):
        return content.to_html(full_html=False, include_plotlyjs=False, config={"responsive": True})
    if isinstance(content, pd.DataFrame):
        return content.to_html(escape=True, border=0)
    if isinstance(content, str):
        return f'<pre class="text">{html.escape(content)}</pre>'
    raise ValueError(f"a report section holds a plotly figure, a DataFrame or text, not {type(content).__name__}")
