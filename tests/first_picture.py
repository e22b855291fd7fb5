"""Time to the first picture in a real browser: `python tests/first_picture.py [--server S] [--cold]`.

Starts a fresh server (--server streamlit: `streamlit run app.py`, whose first session starts the
warm-up; serve: deploy/serve.py, which starts it with the server; deploy: the hosted demo's
deploy/serve.sh), with the tables saved by earlier runs (ui.saved) or, with --cold, none; opens the
app in headless Chromium as a first visitor the moment the server answers, and times from the
page's load to the first heatmap drawn (the saved first picture, ui.opening, where one is saved) and
to the live one (the page's own, once the text is encoded), then the same for the next visitors
(each a fresh browser context, after the previous one's page went idle). Prints the seconds, the
time the server took to answer, and the load average; --json FILE writes them. A measurement, not a
test: the machine's load moves the figures, so they are reported with the load average, never asserted.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

from browser import HEATMAP, MAIN, ROOT, SIDEBAR, VIEWPORT, assert_no_exception, chromium, streamlit_server, wait_idle

TIMEOUT_MS = 300_000
SIDEBAR_TEXT = f'{SIDEBAR} [data-testid="stRadio"]'  # the sidebar's text source: the script has started drawing
TITLE = f'{MAIN} h1'  # the page's title: the page itself (or the saved first picture, ui.opening) is drawing
LIVE = f'{MAIN} [data-testid="stMetric"]'  # the live page's metrics: the text is encoded (the saved picture has none)
COMMANDS = {"streamlit": None,  # tests/browser.py's own: streamlit run app.py
            "serve": ["sh", "-c", f'exec "{sys.executable}" deploy/serve.py --server.port "$PORT" --server.address '
                      '"$ADDRESS" --server.headless true --browser.gatherUsageStats false'],
            "deploy": ["sh", str(ROOT / "deploy" / "serve.sh")]}


def visitor(browser, url: str) -> dict:
    """One fresh session: seconds from navigation to the first drawn heatmap, and to an idle page."""
    context = browser.new_context(viewport=VIEWPORT)
    page = context.new_page()
    start = time.perf_counter()
    page.goto(url)
    page.wait_for_selector(SIDEBAR_TEXT, timeout=TIMEOUT_MS)
    sidebar = time.perf_counter() - start
    page.wait_for_selector(TITLE, timeout=TIMEOUT_MS)
    title = time.perf_counter() - start
    page.wait_for_selector(HEATMAP, timeout=TIMEOUT_MS)
    first = time.perf_counter() - start
    page.wait_for_selector(LIVE, timeout=TIMEOUT_MS)
    page.wait_for_selector(HEATMAP, timeout=TIMEOUT_MS)
    live = time.perf_counter() - start
    wait_idle(page, TIMEOUT_MS)
    assert_no_exception(page)
    idle = time.perf_counter() - start
    context.close()
    return {"sidebar_s": sidebar, "page_title_s": title, "first_heatmap_s": first, "live_heatmap_s": live, "idle_s": idle}


def main(argv=None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--server", choices=sorted(COMMANDS), default="serve", help="how the server starts")
    parser.add_argument("--cold", action="store_true", help="no saved tables: as the very first start")
    parser.add_argument("--visitors", type=int, default=2, help="visitors one after another (the first is fresh)")
    parser.add_argument("--json", default=None, help="also write the figures to this file")
    args = parser.parse_args(argv)
    env = {"EXPLORER_HOSTED": "1" if args.server == "deploy" else ""}
    rows = []
    with chromium() as browser, tempfile.TemporaryDirectory() as empty:
        if args.cold:
            env["EXPLORER_SAVED_DIR"] = empty
        spawned = time.perf_counter()
        with streamlit_server(env=env, command=COMMANDS[args.server]) as server:
            answered = time.perf_counter() - spawned
            for i in range(args.visitors):
                row = {"visitor": i + 1, "server": args.server, "cold": args.cold, "server_answered_s": answered, **visitor(browser, server.url),
                       "load_average": os.getloadavg()[0]}
                rows.append(row)
                print(f"visitor {i + 1}: sidebar {row['sidebar_s']:.1f} s, page title {row['page_title_s']:.1f} s, "
                      f"first heatmap {row['first_heatmap_s']:.1f} s after the page load, live {row['live_heatmap_s']:.1f} s "
                      f"(idle at {row['idle_s']:.1f} s); server answered {answered:.1f} s after its start; "
                      f"load average {row['load_average']:.2f}", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
    return rows


if __name__ == "__main__":
    main()
