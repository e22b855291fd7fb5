"""What a newcomer tripped over, in a real browser (issue 19): a zoom on one text cropped the next,
a signed panel blanked the others on Compare, and an empty Run left the page showing the old text
as if current."""
import io
import json
import urllib.parse

import numpy as np
import pytest
from browser import (MAIN, SIDEBAR, drag_a_box, new_page, settings_of, wait_heatmaps, wait_idle,
                     wait_running)
from browser import sidebar_tokens as tokens

SHORT = {"source": '"Sample"', "sample": '"The Notched Key"'}
LONGER = "Incident Report: Telemetry Loss at Kaldvik Fjord Marine Station"


@pytest.fixture
def page():
    with new_page() as p:
        yield p


def link(base_url: str, url_path: str, **settings) -> str:
    return f"{base_url}/{url_path}?" + urllib.parse.urlencode(settings)


def press_run(page) -> None:
    page.locator(SIDEBAR).get_by_role("button", name="Run", exact=True).click()
    wait_running(page)
    wait_idle(page, 300_000)


def test_a_zoom_on_a_short_text_does_not_crop_the_next_one(page, base_url):
    page.goto(link(base_url, "", run="true", auto_head="false", **SHORT))
    wait_idle(page)
    drag_a_box(page, whole=2709)
    zoomed = settings_of(page.url)["zoom_q"]
    assert zoomed[1] - zoomed[0] < 1000  # a box inside the 2,709-token story
    page.locator(f'{SIDEBAR} [data-testid="stSelectbox"]').filter(has_text="Sample text").click()
    page.get_by_role("option", name=LONGER).click()
    wait_idle(page)
    press_run(page)
    n = tokens(page)
    assert n > 5000
    page.wait_for_function("w => location.search.includes('zoom_q=' + w) || !location.search.includes('zoom_q=')",
                           arg=urllib.parse.quote_plus(json.dumps([0, n])), timeout=60_000)
    shown = settings_of(page.url).get("zoom_q", [0, n])
    assert shown == [0, n] and settings_of(page.url).get("zoom_k", [0, n]) == [0, n]
    assert page.locator(MAIN).get_by_text("lies beyond").count() == 0


def test_compare_with_low_rank_on_a_pasted_text_keeps_every_panel_visible(page, base_url):
    from explorer.core.samples import load_sample
    from ui.texts import TextStore

    key = TextStore.from_env().put(load_sample("The Notched Key"))  # what pasting it and sharing stores
    page.goto(link(base_url, "compare", run="true", auto_head="false", text=json.dumps(key),
                   compare_mechs=json.dumps(["lsh", "lowrank"]), **{"p.lowrank.method": '"linformer"'}))
    wait_idle(page, 300_000)
    dense = wait_heatmaps(page, 3, timeout=120_000).first
    dense.scroll_into_view_if_needed()
    pixels = np.asarray(_image(dense.screenshot()))
    colours = len(np.unique(pixels.reshape(-1, pixels.shape[-1]), axis=0))
    assert colours > 50 and pixels.std() > 20, (colours, pixels.std())  # a map, not one flat colour
    caption = page.locator(MAIN).get_by_text("Automatic:").first.inner_text()
    assert "Low-rank attention: signed" in caption


def test_an_empty_run_says_the_page_still_shows_the_previous_text(page, base_url):
    page.goto(link(base_url, "", run="true", auto_head="false", **SHORT))
    wait_idle(page)
    page.locator(SIDEBAR).get_by_text("Paste", exact=True).click()
    wait_idle(page)
    press_run(page)
    warning = page.locator(MAIN).get_by_text("Still showing the previous text")
    assert warning.count() == 1 and "The Notched Key" in warning.inner_text()
    assert "the text in the sidebar is empty" in warning.inner_text()


def _image(png: bytes):
    from PIL import Image

    return Image.open(io.BytesIO(png)).convert("RGB")
