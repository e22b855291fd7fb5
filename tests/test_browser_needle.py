"""The Needle page in a real browser (SmolLM2, real weights, a short prompt): Stop ends the passes and
leaves what was made on a usable page, Continue makes the rest, and a click on a square of the retrieval
grid opens the Dense attention page on that prompt, in that layer and head, at the answer's first token."""
import re
import urllib.parse

import pytest
from browser import MAIN, SIDEBAR, VIEWPORT, assert_no_exception, chromium, streamlit_server, wait_charts, wait_idle

SETTINGS = {"run": "true", "source": '"Sample"', "sample": '"The Notched Key"', "model": '"smollm2"',
            "auto_head": "false", "needle_tokens": "192", "needle_points": "8", "needle_mechs": "[]"}
LAYER, HEAD = 20, 6
ANSWER_TOKENS = 5  # " 7391": a space, then one token per digit


@pytest.fixture(scope="module")
def page():
    with streamlit_server(env={"EXPLORER_WARM": "0"}) as server, chromium() as browser:
        context = browser.new_context(viewport=VIEWPORT)
        tab = context.new_page()
        errors = []
        tab.on("pageerror", lambda err: errors.append(str(err)))
        tab.goto(f"{server.url}/needle?" + urllib.parse.urlencode(SETTINGS))
        yield tab
        context.close()
        assert not errors, errors


def test_stop_keeps_what_was_made_and_continue_makes_the_rest(page):
    main = page.locator(MAIN)
    main.get_by_text("forward passes", exact=False).first.wait_for(timeout=180_000)
    main.get_by_role("button", name="Stop").click()
    wait_idle(page)
    assert_no_exception(page)
    stopped = main.get_by_text(re.compile(r"Stopped: \d+ of 8 forward passes made"))
    assert stopped.is_visible()
    main.get_by_role("button", name="Continue").click()
    wait_idle(page, timeout=600_000)
    assert_no_exception(page)
    wait_charts(page, 2)
    assert not main.get_by_text("Stopped:").count()
    assert main.get_by_text("Where the fact gets lost", exact=True).is_visible()


def test_a_square_of_the_retrieval_grid_opens_the_dense_page_at_the_answer(page):
    grid = page.locator(f"{MAIN} .js-plotly-plot").nth(1)
    square = grid.locator(".scatterlayer .trace").first.locator("path.point").nth(LAYER * 9 + HEAD)
    square.scroll_into_view_if_needed()
    box = square.bounding_box()
    page.mouse.click(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    page.wait_for_function("() => location.search.includes('head=6')", timeout=120_000)
    wait_idle(page)
    assert_no_exception(page)
    assert page.locator(f"{MAIN} h1").first.inner_text() == "Dense attention"
    caption = page.locator(SIDEBAR).get_by_text(re.compile(r"tokens · 9 heads · layer 20")).inner_text()
    tokens = int(caption.split(" tokens")[0].replace(",", ""))
    shared = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(page.url).query))
    assert (shared["layer"], shared["head"]) == (str(LAYER), str(HEAD)) and tokens <= 192
    assert shared["query"] == str(tokens - ANSWER_TOKENS)  # the answer's first token: the prompt's fifth from last
