"""Inside the model in a real browser (streamlit run app.py, headless Chromium), SmolLM2 on the short
sample's first 256 tokens: the table in StreamingLLM's form and the loss chart are drawn, and a click on
the most hurt prediction opens the Dense attention page with that token as the query."""
import urllib.parse

import pytest
from browser import MAIN, new_page, settings_of, streamlit_server, wait_idle

LINK = {"run": "true", "auto_head": "false", "model": '"smollm2"', "source": '"Sample"', "sample": '"The Notched Key"',
        "inside_tokens": "256", "inside_mechs": '["window", "sinks"]', "inside_window": "64", "p.sinks.window": "60"}


@pytest.fixture(scope="module")
def page():
    with streamlit_server(env={"EXPLORER_WARM": "0"}) as server, new_page() as tab:
        tab.goto(f"{server.url}/inside?" + urllib.parse.urlencode(LINK))
        wait_idle(tab, 600_000)
        yield tab


def _cell(frame, row: int, col: int) -> str:
    """A cell of a dataframe as its accessible grid holds it (row 1 is the first data row)."""
    return frame.locator(f'[data-testid="glide-cell-{col}-{row - 1}"]').inner_text()


def test_the_table_the_chart_and_a_click_on_a_hurt_prediction(page):
    page.get_by_role("button", name="Swap them in and score").click()
    frames = page.locator(f'{MAIN} [data-testid="stDataFrame"]')
    frames.nth(1).wait_for(timeout=600_000)  # the table of hurt predictions: every pass made
    wait_idle(page, 600_000)
    assert frames.count() == 2
    table = frames.nth(0)
    assert [_cell(table, r, 0) for r in (1, 2, 3)] == ["Dense (the model's own)", "Window only (64)",
                                                      "Sinks + window (4 + 60)"]
    assert float(_cell(table, 2, 4).rstrip("×")) > float(_cell(table, 3, 4).rstrip("×")) >= 1.0
    chart = page.locator(f'{MAIN} .js-plotly-plot').first  # the loss along the text (drawn when in view)
    chart.scroll_into_view_if_needed()
    chart.locator(".scatterlayer .trace").first.wait_for()
    assert "added loss" in chart.inner_text() and chart.locator(".scatterlayer .trace").count() == 2
    hurt = frames.nth(1)
    hurt.scroll_into_view_if_needed()
    query = int(_cell(hurt, 1, 1))
    box = hurt.bounding_box()
    page.mouse.click(box["x"] + 12, box["y"] + 52)  # the first row's selection box
    page.wait_for_timeout(1000)
    wait_idle(page, 600_000)
    assert page.locator("h1").first.inner_text() == "Dense attention"
    settings = settings_of(page.url)
    assert settings["query"] == query and settings["layer"] == 0 and settings["head"] == 0
