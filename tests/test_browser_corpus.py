"""The Corpus page in a real browser at 1600 x 1000 (issue 25): a row opens the text at the length the
sweep measured, whole, and says which length is shown, even after another document's zoom (item 8);
the sinks grid's title clear of the chart toolbar, the table without a sideways scroll (item 11).
The table is a canvas: its rows are clicked by position (the row-selection column at its left)."""
import json
import urllib.parse

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from playwright.sync_api import TimeoutError as PlaywrightTimeout
from browser import MAIN, WIDE, drag_a_box, nav_to, new_page, settings_of, wait_heatmaps, wait_idle
from browser import sidebar_tokens as tokens
from conftest import SHORT_SAMPLE

from explorer.analysis import corpus
from explorer.core.encoding import first_tokens, load_model, tokenize
from explorer.core.samples import load_sample

LONGER = "Incident Report: Telemetry Loss at Kaldvik Fjord Marine Station"
ROW_PX, HEADER_PX, MARKER_PX = 35, 35, 15  # Streamlit's dataframe: row and header height, the tick column's middle


@pytest.fixture
def page():
    with new_page(WIDE) as p:
        yield p


def click_row(page, i: int) -> None:
    """Tick row i of the Corpus table and wait for the Dense attention page it opens."""
    grid = page.locator(f'{MAIN} [data-testid="stDataFrame"]')
    grid.scroll_into_view_if_needed()
    box = grid.bounding_box()
    page.mouse.click(box["x"] + MARKER_PX, box["y"] + HEADER_PX + ROW_PX * i + ROW_PX / 2)
    page.get_by_role("heading", name="Dense attention", exact=True).wait_for(timeout=300_000)  # the row opened
    wait_idle(page, 300_000)


def url_settled(page, key: str, expected, timeout: float = 10_000) -> dict:
    """The page's settings once `key` reads `expected` (or is absent) in the address bar, which the
    browser writes a moment after the run; as they are at `timeout`, to be asserted, when it never does."""
    try:
        page.wait_for_function("([k, v]) => { const got = new URLSearchParams(location.search).get(k);"
                               " return got === null || JSON.stringify(JSON.parse(got)) === v; }",
                               arg=[key, json.dumps(expected, separators=(",", ":"))], timeout=timeout)
    except PlaywrightTimeout:
        pass
    return settings_of(page.url)


def test_a_row_opens_at_the_length_it_measured_whole_after_another_documents_zoom(page, base_url, tmp_path):
    sweep = corpus.read(corpus.EXAMPLE)
    dense = sweep[(sweep.model == "minilm") & (sweep.mechanism == "dense") & (sweep.layer == 0) & (sweep["head"] == 0)]
    story = dense[(dense.source == f"sample:{SHORT_SAMPLE}") & (dense.tokens == 2048)]  # a bundled sample
    (tmp_path / "incident.txt").write_text(load_sample(LONGER), encoding="utf-8")  # a user's file
    report = dense[(dense.document == LONGER) & (dense.tokens == 1024)].assign(
        document="incident.txt", source=str(tmp_path / "incident.txt"))
    pq.write_table(pa.Table.from_pandas(pd.concat([story, report]), schema=corpus.SCHEMA, preserve_index=False),
                   tmp_path / "sweep.parquet")
    lm = load_model("minilm")
    specials = len(lm.prefix) + len(lm.suffix)  # the Doc's [CLS] and [SEP] around the text's tokens
    whole_story, whole_report = (len(tokenize(load_sample(t), lm)[0]) for t in (SHORT_SAMPLE, LONGER))
    assert len(tokenize(first_tokens(load_sample(LONGER), lm, 1024), lm)[0]) == 1024

    page.goto(f"{base_url}/corpus?" + urllib.parse.urlencode(
        {"run": "false", "corpus_source": '"path"', "corpus_path": json.dumps(str(tmp_path / "sweep.parquet"))}))
    wait_idle(page)
    click_row(page, 0)
    assert tokens(page) == 2048 + specials
    note = page.locator(MAIN).get_by_text("Opened from the Corpus table")
    assert f"its first 2,048 of {whole_story:,} tokens" in note.inner_text()
    drag_a_box(page, whole=2048 + specials)  # the story's zoom and query, which the next row must not keep
    dragged = settings_of(page.url)
    assert dragged["zoom_q"] != [0, 2048 + specials]

    nav_to(page, "Corpus")
    click_row(page, 1)
    n = tokens(page)
    assert n == 1024 + specials  # the first 1,024 tokens, as measured, not the file's 5,714
    now = url_settled(page, "zoom_q", [0, n])
    assert now.get("zoom_q", [0, n]) == [0, n] and now.get("zoom_k", [0, n]) == [0, n]
    assert now.get("query") != dragged["query"]
    note = page.locator(MAIN).get_by_text("Opened from the Corpus table")
    assert "“incident.txt”, its first 1,024 of " f"{whole_report:,} tokens" in note.inner_text()
    assert page.locator(MAIN).get_by_text("lies beyond").count() == 0


def apart(a: dict, b: dict) -> bool:
    """Whether two bounding boxes do not overlap."""
    return (a["x"] + a["width"] <= b["x"] or b["x"] + b["width"] <= a["x"]
            or a["y"] + a["height"] <= b["y"] or b["y"] + b["height"] <= a["y"])


def test_the_sinks_title_clears_the_toolbar_and_the_table_fits(page, base_url):
    page.goto(f"{base_url}/corpus?run=false")
    wait_idle(page)
    wait_heatmaps(page)
    grid = page.locator(f"{MAIN} .js-plotly-plot").filter(has=page.locator("g.hm")).first  # SmolLM2's sink grid
    grid.scroll_into_view_if_needed()
    grid.hover()  # the toolbar shows on hover
    toolbar = grid.locator(".modebar")
    toolbar.wait_for(state="visible")
    assert apart(grid.locator(".gtitle").bounding_box(), toolbar.bounding_box())
    table = page.locator(f'{MAIN} [data-testid="stDataFrame"] .dvn-scroller')  # what scrolls the canvas
    table.scroll_into_view_if_needed()
    wide, shown = table.evaluate("e => [e.scrollWidth, e.clientWidth]")
    assert wide <= shown, f"the table is {wide} px wide in {shown} px"
