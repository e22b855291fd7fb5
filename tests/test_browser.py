"""The app in a real browser: `streamlit run app.py` and headless Chromium (see tests/browser.py).

One server and one browser serve the whole module. `encoded_page` is one tab (one Streamlit
session) that ran the default sample once, shared by the tests that need an encoding; `page`
is a fresh tab, i.e. a fresh session, per test.
"""
import json
import urllib.parse

import pytest
from browser import (
    HEATMAP,
    MAIN,
    SIDEBAR,
    VIEWPORT,
    assert_no_exception,
    chromium,
    drag_a_box,
    run_default_sample,
    visit,
    wait_charts,
    wait_heatmaps,
    wait_idle,
)

NAV = f'{SIDEBAR} [data-testid="stSidebarNav"]'


@pytest.fixture(scope="module")
def browser():
    with chromium() as running:
        yield running


@pytest.fixture(scope="module")
def browser_context(browser):
    context = browser.new_context(viewport=VIEWPORT)
    yield context
    context.close()


def _tab(browser_context):
    page = browser_context.new_page()
    errors = []
    page.on("pageerror", lambda err: errors.append(str(err)))
    yield page
    page.close()
    assert not errors, f"JavaScript errors in the page: {errors}"


@pytest.fixture
def page(browser_context):
    yield from _tab(browser_context)


@pytest.fixture(scope="module")
def encoded_page(browser_context, base_url):
    """A tab that opened the app and ran the sidebar's default sample (the first, short one)."""
    for page in _tab(browser_context):
        visit(page, base_url)
        run_default_sample(page)
        yield page


def test_default_sample_draws_the_attention_map(encoded_page):
    page = encoded_page
    main = page.locator(MAIN)
    assert main.get_by_role("heading", name="Dense attention").is_visible()
    wait_heatmaps(page)  # the pooled attention map (plotly heatmap)
    page.wait_for_function(  # and the entropy and max-weight curves
        "sel => document.querySelectorAll(sel).length >= 3", arg=f"{MAIN} .js-plotly-plot", timeout=30_000)
    box = page.locator(HEATMAP).first.bounding_box()
    assert box and box["width"] > 100 and box["height"] > 100
    assert main.locator('[data-testid="stMetricValue"]').first.inner_text().strip() not in ("", "—")
    assert_no_exception(page)


def test_dragging_a_box_on_the_map_zooms_into_it(page, base_url):
    page.goto(link(base_url, "", run="true", **SHORT))
    wait_idle(page)
    drag_a_box(page, whole=2709)
    assert_no_exception(page)
    rows = json.loads(_settings(page.url)["zoom_q"])
    keys = json.loads(_settings(page.url)["zoom_k"])
    assert 600 < rows[0] < rows[1] < 1500 and 600 < keys[0] < keys[1] < 1400
    assert int(_settings(page.url)["query"]) == rows[0]


def test_sidebar_navigation_lists_the_pages(encoded_page):
    page = encoded_page
    nav = page.locator(NAV)
    links = nav.locator('[data-testid="stSidebarNavLink"]')
    titles = [t.strip().splitlines()[-1] for t in links.all_inner_texts()]  # the icon comes first
    assert "Dense attention" in titles, titles
    current = nav.locator('[data-testid="stSidebarNavLink"][aria-current="page"]')
    assert current.inner_text().strip().endswith("Dense attention")
    # Switching pages in the session (nav_to(page, "Compare") and back, keeping the encoding)
    # works too, but runs that page's computations: ~60 s for Compare on a busy 2-core machine.


# One URL path per page (Streamlit names it after the file in views/; the default page has none).
PAGES = ["", "model", "compare", "dilution", "lsh", "lowrank", "segmented", "hierarchical", "memory", "routing",
         "relpos"]
SHORT = {"source": '"Sample"', "sample": '"The Notched Key"'}


def link(base_url: str, url_path: str, **settings) -> str:
    """A shared link: settings are JSON values in the query string, as the app writes them."""
    return f"{base_url}/{url_path}?" + urllib.parse.urlencode(settings)


def test_a_link_without_run_asks_for_a_text(page, base_url):
    page.goto(link(base_url, "compare", run="false"))
    wait_idle(page)
    assert_no_exception(page)
    assert page.locator(MAIN).get_by_text("Choose a text in the sidebar").is_visible()


def test_a_first_visit_draws_the_default_sample_with_run_in_view(browser, base_url):
    """No click: the field guide's dense map appears, and the text source and Run are in view at 1600x1000."""
    context = browser.new_context(viewport={"width": 1600, "height": 1000})
    try:
        fresh = context.new_page()
        visit(fresh, base_url)
        wait_heatmaps(fresh)
        sidebar = fresh.locator(SIDEBAR)
        assert sidebar.get_by_text("22,4", exact=False).count()  # the field guide's token count
        for target in (sidebar.get_by_role("button", name="Run", exact=True),
                       sidebar.locator('[data-testid="stSelectbox"]').filter(has_text="Sample text")):
            box = target.bounding_box()
            assert box and box["y"] >= 0 and box["y"] + box["height"] <= 1000, box
    finally:
        context.close()


@pytest.mark.parametrize("url_path", PAGES)
def test_every_page_works_from_a_shared_link(page, base_url, url_path):
    """A link with a sample and run=true encodes it and draws the page, in a fresh session."""
    page.goto(link(base_url, url_path, run="true", **SHORT))
    wait_idle(page)
    assert_no_exception(page)
    assert not page.get_by_text("Page not found").count()
    wait_charts(page)
    assert page.locator(f"{MAIN} h1").count() == 1


def test_a_link_copied_from_compare_opens_the_same_view(browser, page, base_url):
    page.goto(link(base_url, "compare", run="true", query="17", compare_mechs='["segmented", "memory"]',
                   **{"p.segmented.segment_length": "32"}, **SHORT))
    wait_idle(page)
    wait_heatmaps(page, 3)
    page.wait_for_function("() => location.search.includes('compare_per_row')")  # written a moment after the run
    copied = page.url  # the app rewrites the address with every setting
    table = page.locator(f"{MAIN} [data-testid='stDataFrame']").first.inner_text()
    fresh = browser.new_context(viewport=VIEWPORT)  # a new profile: no session, no cookies
    try:
        other = fresh.new_page()
        other.goto(copied)
        wait_idle(other)
        assert_no_exception(other)
        wait_heatmaps(other, 3)
        assert _settings(other.url) == _settings(copied)
        assert _settings(copied)["query"] == "17" and _settings(copied)["p.segmented.segment_length"] == "32"
        assert other.locator(f"{MAIN} [data-testid='stDataFrame']").first.inner_text().split("\n")[:3] == \
            table.split("\n")[:3]
    finally:
        fresh.close()


def _settings(url: str) -> dict:
    return dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(url).query))


def test_a_square_clicked_on_the_model_view_becomes_the_current_head(page, base_url):
    page.goto(link(base_url, "model", run="true", auto_head="false", **SHORT))
    wait_idle(page)
    assert_no_exception(page)
    square = page.locator(f"{MAIN} .js-plotly-plot .scatterlayer .trace").first.locator("path.point").nth(3 * 12 + 5)
    square.wait_for(timeout=60_000)
    square.scroll_into_view_if_needed()
    box = square.bounding_box()  # layer 3, head 5: the 42nd square, in layer-then-head order
    page.mouse.click(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)  # through plotly's own hit test
    page.wait_for_function("() => location.search.includes('head=5')", timeout=60_000)
    wait_idle(page)
    assert_no_exception(page)
    assert page.locator(SIDEBAR).get_by_text("2,709 tokens · 12 heads · layer 3").is_visible()
    assert _settings(page.url)["layer"] == "3" and _settings(page.url)["head"] == "5"
