"""A hosted demo in a real browser: the Dockerfile's entrypoint (deploy/serve.sh) outside a
container, markup from a link shown as text, and eight visitors at once on one server, each
getting exactly the numbers its own text gives when encoded alone."""
import csv
import io
import urllib.parse

import pytest
import torch
from browser import (MAIN, SIDEBAR, VIEWPORT, assert_no_exception, chromium, run_default_sample,
                     streamlit_server, visit, wait_heatmaps, wait_idle, wait_running)

import explorer
from explorer.core.samples import load_sample

SESSIONS = 8


@pytest.fixture(scope="module")
def browser():
    with chromium() as running:
        yield running


@pytest.fixture(scope="module")
def hosted():
    """deploy/serve.sh, as the container runs it, with a cap small enough for the tests."""
    with streamlit_server(command=["deploy/serve.sh"], env={"EXPLORER_HOSTED": "1", "EXPLORER_MAX_TOKENS": "3000",
                                                           "EXPLORER_WORKERS": "2"}) as server:
        yield server


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport=VIEWPORT)
    tab = context.new_page()
    errors = []
    tab.on("pageerror", lambda err: errors.append(str(err)))
    yield tab
    context.close()
    assert not errors, f"JavaScript errors in the page: {errors}"


def test_the_entrypoint_serves_the_hosted_demo(page, hosted):
    visit(page, hosted.url)
    sidebar = page.locator(SIDEBAR)
    assert sidebar.get_by_text("hosted demo").is_visible()
    assert sidebar.locator('[data-testid="stSelectbox"]').filter(has_text="Model").count() == 1
    assert not sidebar.locator('[data-testid="stTextInput"]').filter(has_text="Model").count()
    assert sidebar.get_by_role("button", name="Use the first 3,000 tokens").count() == 1  # the field guide is over
    sidebar.locator('[data-testid="stSelectbox"]').filter(has_text="Sample text").click()
    page.get_by_role("option", name="The Notched Key").click()  # a sample under the cap
    wait_idle(page)
    run_default_sample(page)
    wait_heatmaps(page)


def test_a_text_over_the_cap_waits_for_the_visitors_choice(page, hosted):
    visit(page, hosted.url)
    sidebar = page.locator(SIDEBAR)
    sidebar.locator('[data-testid="stSelectbox"]').filter(has_text="Sample text").click()
    page.get_by_role("option", name="A Field Guide to Reading Long Documents").click()
    wait_idle(page)
    sidebar.get_by_role("button", name="Run", exact=True).click()
    wait_running(page)
    wait_idle(page)
    assert sidebar.get_by_text("this demo encodes at most 3,000").is_visible()
    sidebar.get_by_role("button", name="Use the first 3,000 tokens").click()
    wait_running(page)
    wait_idle(page)
    assert_no_exception(page)
    assert sidebar.get_by_text("3,002 tokens · 12 heads").is_visible()  # 3,000 and the model's [CLS] and [SEP]


def test_markup_in_a_link_is_shown_as_text(page, hosted):
    hostile = "[click me](https://evil.example/x) ![img](https://evil.example/p.png) <b>bold</b> www.evil.example"
    with streamlit_server() as local:  # the local app, where any model name reaches the loader's message
        query = urllib.parse.urlencode({"model": f'"{hostile}"', "source": '"Sample"', "run": "true"})
        page.goto(f"{local.url}/?{query}")
        wait_idle(page)
        alert = page.locator('[data-testid="stAlert"]').filter(has_text="is neither a bundled model")  # refused as read
        assert alert.count() == 1 and "click me" in alert.inner_text() and "<b>bold</b>" in alert.inner_text()
        assert alert.locator("a, img, b").count() == 0  # no link, image or bold made of the name
        assert page.locator('a[href^="https://evil"], a[href*="//www.evil"], img[src*="evil.example"]').count() == 0


def texts() -> list[str]:
    """Eight different real texts of a few hundred tokens each."""
    guide = load_sample("A Field Guide to Reading Long Documents").split("\n\n")
    paragraphs = [p for p in guide if len(p) > 400]
    return [f"Visitor {i}.\n\n" + "\n\n".join(paragraphs[2 * i : 2 * i + 2]) for i in range(SESSIONS)]


def per_token_csv(page) -> dict[str, list[float]]:
    with page.expect_download(timeout=60_000) as download:
        page.locator(MAIN).get_by_role("button", name="Per-token statistics (CSV)").click()
    rows = list(csv.DictReader(io.StringIO(open(download.value.path(), encoding="utf-8").read())))
    return {name: [float(r[name]) for r in rows] for name in ("entropy", "max weight")}


def test_eight_visitors_at_once_each_get_their_own_numbers(browser, hosted):
    """8 sessions paste 8 texts and press Run at once, then visit three pages; every session's
    per-token statistics equal its text encoded alone, and no session sees an error."""
    contexts = [browser.new_context(viewport=VIEWPORT, accept_downloads=True) for _ in range(SESSIONS)]
    pages = [c.new_page() for c in contexts]
    errors = []
    for p in pages:
        p.on("pageerror", lambda err: errors.append(str(err)))
    try:
        for p in pages:
            visit(p, hosted.url)
        for p, text in zip(pages, texts()):
            p.locator(SIDEBAR).get_by_text("Paste", exact=True).click()
        for p in pages:
            wait_idle(p)
        for p, text in zip(pages, texts()):
            area = p.locator(SIDEBAR).locator("textarea")
            area.fill(text)
            area.press("Control+Enter")
        for p in pages:
            wait_idle(p)
        for p in pages:  # all eight Runs in flight together
            p.locator(SIDEBAR).get_by_role("button", name="Run", exact=True).click()
        for p in pages:
            wait_running(p)
        for p in pages:
            wait_idle(p, timeout=300_000)
            assert_no_exception(p)
        for title in ("Compare", "Score dilution", "Dense attention"):
            for p in pages:
                p.locator(f'{SIDEBAR} [data-testid="stSidebarNavLink"]').get_by_text(title, exact=True).click()
            for p in pages:
                wait_idle(p, timeout=300_000)
                assert_no_exception(p)
        for p, text in zip(pages, texts()):
            wait_heatmaps(p)
            got = per_token_csv(p)
            doc = explorer.encode(text, "minilm", layer=0)
            alone = explorer.attention_stats(*doc.head(0), grid=8)
            for column, want in (("entropy", alone.entropy[0]), ("max weight", alone.max_weight[0])):
                torch.testing.assert_close(torch.tensor(got[column], dtype=torch.float64), want.double(),
                                           rtol=1e-4, atol=1e-6)
        assert not [p for p in pages if p.locator('[data-testid="stAlert"]').filter(has_text="went wrong").count()]
        assert not errors
        print(f"\n{SESSIONS} sessions on one server: peak resident memory {hosted.peak_rss_mib():,.0f} MiB")
    finally:
        for c in contexts:
            c.close()
