"""A long text in a real browser: the dense page shows a labelled preview within seconds of the
encoding, keeps it refining with counts, then draws the exact pass (issue: a long text at a glance)."""
import re
import urllib.parse

from browser import HEATMAP, MAIN, assert_no_exception, chromium, streamlit_server, wait_heatmaps

from explorer.core.samples import python_reference
from ui.texts import TextStore

LONG = 260_000  # characters of the Python reference: about 69k MiniLM tokens
ENCODED = 400_000  # ms for the encoding (every layer, for the default head) on a slow machine
EXACT = 600_000  # ms for the exact pass of about 69k queries after that


def test_a_long_text_shows_a_preview_then_the_exact_map(tmp_path):
    key = TextStore(tmp_path, 2**24, 2**26).put(python_reference()[:LONG])
    query = urllib.parse.urlencode({"source": '"Paste"', "text": f'"{key}"', "run": "true"})
    with streamlit_server(env={"EXPLORER_TEXT_DIR": str(tmp_path)}) as server, chromium() as browser:
        page = browser.new_context(viewport={"width": 1600, "height": 1000}).new_page()
        page.goto(f"{server.url}/?{query}")
        preview = page.locator(MAIN).get_by_text(re.compile(r"Preview: [\d,]+ of [\d,]+ queries"))
        preview.first.wait_for(timeout=ENCODED)
        shown, total = (int(x.replace(",", "")) for x in
                        re.search(r"Preview: ([\d,]+) of ([\d,]+)", preview.first.inner_text()).groups())
        assert total >= 60_000 and 512 <= shown < total
        wait_heatmaps(page)  # the preview is drawn as a map while the pass goes on
        assert page.locator(MAIN).get_by_text(re.compile(r"queries/s · about [\d,]+ s left")).count()
        assert page.get_by_role("button", name="Stop").count() == 1
        preview.first.wait_for(state="detached", timeout=EXACT)
        page.locator(MAIN).get_by_text("Per-token statistics (CSV)").wait_for(timeout=60_000)  # the page redrawn
        metric = page.locator('[data-testid="stMetric"]').filter(has_text="Dense pass")
        assert re.search(r"\d+\.\d\d s", metric.inner_text()), metric.inner_text()
        assert page.locator(HEATMAP).count() >= 1
        assert_no_exception(page)
