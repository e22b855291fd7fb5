"""Every chart and section a page draws: shown, downloadable as PNG and SVG at publication size,
and kept, in order, for the page's self-contained HTML report.

Pages call `show(where, fig, key)` instead of `where.plotly_chart(...)` and `section(title,
caption)` instead of a subheader and its caption. What a run drew is collected under the
session key "_report" (reset by app.py at the start of every run); `report_button` turns it into
one HTML file on click. Figures are rendered to files only when their button is clicked.
In a hosted demo the server renders no pictures (each export drives a browser of its own); the
chart's own camera button still saves a PNG from the visitor's browser.
"""
from __future__ import annotations

import re

import streamlit as st

from explorer.figures import export
from explorer.figures.report import html_report
from ui import hosting

REPORT = "_report"  # session key: what this run drew, for the HTML report


def start_report(page: str) -> None:
    st.session_state[REPORT] = {"page": page, "items": []}


def _record(item) -> None:
    """Keep an item for the report; one drawn again (a refreshing fragment redraws its part of
    the page, not the whole run) replaces itself instead of repeating."""
    report = st.session_state.get(REPORT)
    if report is None:
        return
    items = report["items"]
    same = [i for i, old in enumerate(items) if old[0] == item[0] == "figure" and old[2] == item[2]  # its key
            or old[0] == item[0] == "section" and old == item]
    if same:
        items[same[0]] = item
    else:
        items.append(item)


def section(title: str, caption: str = "", where=st) -> None:
    """A section heading and the sentences saying what the reader is looking at."""
    where.subheader(title)
    if caption:
        where.caption(caption)
    _record(("section", title, caption))


def _file_name(key: str) -> str:
    return re.sub(r"[^A-Za-z0-9_-]+", "-", key).strip("-") or "figure"


def show(where, fig, key: str, **chart):
    """Draw a plotly figure (where: st or a column) with its downloads; returns the chart's event."""
    event = where.plotly_chart(fig, key=key, **{"width": "stretch", **chart})
    _record(("figure", fig, key))
    if not hosting.hosted() and export.unavailable() is None:
        name = _file_name(key)
        with where.popover("Download picture", width="content"):
            st.download_button("PNG (3200 × 2000)", lambda: export.to_png(fig), f"{name}.png", "image/png",
                               key=f"png_{key}", on_click="ignore")
            st.download_button("SVG", lambda: export.to_svg(fig), f"{name}.svg", "image/svg+xml",
                               key=f"svg_{key}", on_click="ignore")
    return event


def report_sections() -> list[tuple]:
    """The report's sections: (heading, caption, figure) in the order the page drew them."""
    items = (st.session_state.get(REPORT) or {}).get("items", [])
    sections, heading, caption = [], "", ""
    for item in items:
        if item[0] == "section":
            heading, caption = item[1], item[2]
        else:  # a figure: under the heading it follows (later figures of the section under none)
            sections.append((heading, caption, item[1]))
            heading, caption = "", ""
    return sections


def report_button(title: str) -> None:
    """A sidebar button that saves this page as one HTML file (figures inline, opens offline)."""
    report = st.session_state.get(REPORT)
    if not report or not report["items"]:
        return
    sections = report_sections()
    st.download_button("Save this page (HTML)", lambda: html_report(title, sections),
                       f"{_file_name(report['page'])}.html", "text/html", key="report_html", on_click="ignore",
                       help="one self-contained file: every chart of this page, interactive, no network needed")
