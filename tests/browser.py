"""Helpers for the browser tests: a `streamlit run app.py` server and headless Chromium.

The browser is Debian's /usr/bin/chromium (Playwright's own download needs the
internet); override it with the CHROMIUM environment variable.
"""
from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
SERVER_TIMEOUT = 60  # seconds until /_stcore/health must answer
RUN_TIMEOUT = 120_000  # ms for a script run (encoding included) to finish

# Streamlit 1.67 DOM: the app root carries data-test-script-state: "initial" until the first run,
# "running" / "rerunRequested" / "stopRequested" during one, "notRunning" (or "compilationError")
# after it. While a run lasts, the header's status widget (stStatusWidget) shows a running icon
# (aria-label "Running...") and a Stop button. The widget itself also appears for other reasons
# (disconnected; "source file changed, Rerun"), so idleness looks at the running icon only.
APP_ROOT = '[data-testid="stApp"]'
STATUS_WIDGET = '[data-testid="stStatusWidget"]'
RUNNING_ICON = '[data-testid="stStatusWidgetRunningIcon"]'
EXCEPTION = '[data-testid="stException"]'
MAIN = '[data-testid="stMain"]'
SIDEBAR = '[data-testid="stSidebar"]'
# A drawn plotly heatmap: plotly renders a heatmap trace as an <image> inside g.hm
# (the layer group is g.heatmaplayer); a chart with no data has neither.
HEATMAP = f'{MAIN} .js-plotly-plot g.hm image'
CHART = f'{MAIN} .js-plotly-plot .main-svg'


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as r:
            return r.status == 200
    except (urllib.error.URLError, OSError):
        return False


@dataclass
class Server:
    url: str
    pid: int

    def peak_rss_mib(self) -> float:
        """The server process's peak resident memory so far (VmHWM), in MiB."""
        status = Path(f"/proc/{self.pid}/status").read_text()
        return int(next(line for line in status.splitlines() if line.startswith("VmHWM")).split()[1]) / 1024


@contextlib.contextmanager
def streamlit_server(timeout: float = SERVER_TIMEOUT, root: Path = ROOT, env: dict | None = None,
                     command: list[str] | None = None):
    """Run `streamlit run app.py` in `root` (the repository) on a free port; yield the Server.

    command: another way to start it (e.g. deploy/serve.sh), told the port by $PORT."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "PORT": str(port), "ADDRESS": "127.0.0.1",
           "PYTHON": sys.executable, "EXPLORER_WARM": "1", **(env or {})}  # env may override any of these
    log = tempfile.TemporaryFile()
    proc = subprocess.Popen(
        command or [sys.executable, "-m", "streamlit", "run", "app.py", "--server.headless", "true",
                    "--server.port", str(port), "--server.address", "127.0.0.1",
                    "--browser.gatherUsageStats", "false"],
        cwd=root, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + timeout
        while not _healthy(url):
            if proc.poll() is not None or time.monotonic() > deadline:
                log.seek(0)
                out = log.read().decode(errors="replace")
                raise RuntimeError(f"streamlit did not come up on {url} (exit {proc.poll()}):\n{out}")
            time.sleep(0.3)
        yield Server(url, proc.pid)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()


@contextlib.contextmanager
def chromium():
    """A headless Chromium (Playwright sync API); each new_context() is a fresh, cookie-less profile."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            yield browser
        finally:
            browser.close()


VIEWPORT = {"width": 1400, "height": 900}
WIDE = {"width": 1600, "height": 1000}  # the size screenshots are looked at in


@contextlib.contextmanager
def new_page(viewport: dict = VIEWPORT):
    """A page in a fresh, cookie-less context of a headless Chromium."""
    with chromium() as browser:
        context = browser.new_context(viewport=viewport)
        try:
            yield context.new_page()
        finally:
            context.close()


def settings_of(url: str) -> dict:
    """The settings a page's address carries, as JSON values."""
    return {k: json.loads(v[0]) for k, v in urllib.parse.parse_qs(urllib.parse.urlparse(url).query).items()}


def sidebar_tokens(page) -> int:
    """The tokens of the encoded text, as the sidebar's caption ("2,709 tokens · 12 heads · ...") says."""
    caption = page.locator(SIDEBAR).get_by_text(" tokens · ").first.inner_text()
    return int(caption.split(" tokens")[0].replace(",", ""))


_IDLE_JS = """([app, widget, settle]) => {
    const root = document.querySelector(app);
    const state = root && root.getAttribute('data-test-script-state');
    const idle = root && root.getAttribute('data-test-connection-state') === 'CONNECTED'
        && (state === 'notRunning' || state === 'compilationError') && !document.querySelector(widget);
    const now = performance.now();
    if (!idle) { window.__stBusyAt = now; return false; }
    return now - (window.__stBusyAt ?? 0) >= settle;
}"""


def wait_idle(page, timeout: float = RUN_TIMEOUT, settle: float = 500) -> None:
    """Wait until the script has run and is idle: connected, script state "notRunning" (not
    "initial": nothing ran yet), no running icon in the status widget, and all that for
    `settle` ms in a row (a widget's rerun starts a moment after the click)."""
    page.evaluate("() => { window.__stBusyAt = performance.now(); }")
    page.wait_for_function(_IDLE_JS, arg=[APP_ROOT, RUNNING_ICON, settle], timeout=timeout, polling=100)


def wait_running(page, timeout: float = 5_000) -> bool:
    """Wait (briefly) until a script run has started; False if none started within `timeout` ms."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    try:
        page.wait_for_function(
            """([app, widget]) => document.querySelector(widget) || ['running', 'rerunRequested']
                .includes(document.querySelector(app)?.getAttribute('data-test-script-state'))""",
            arg=[APP_ROOT, RUNNING_ICON], timeout=timeout, polling=50)
        return True
    except PlaywrightTimeout:  # a fast run may have come and gone
        return False


def assert_no_exception(page) -> None:
    errors = page.locator(EXCEPTION)
    if errors.count():
        raise AssertionError("the app shows an exception:\n" + "\n---\n".join(errors.all_inner_texts()))


def run_default_sample(page, timeout: float = RUN_TIMEOUT) -> None:
    """Press the sidebar's Run (the default source is the first, shortest sample) and wait."""
    wait_idle(page, timeout)
    page.locator(SIDEBAR).get_by_role("button", name="Run", exact=True).click()
    wait_running(page)
    wait_idle(page, timeout)
    assert_no_exception(page)


def visit(page, base_url: str, url_path: str = "", timeout: float = RUN_TIMEOUT) -> None:
    """Open a page by its URL path (e.g. "" or "overview"), wait until idle, assert no exception.

    Session state survives a client-side navigation but not a full reload, so to see a
    page with an encoded text, click its sidebar link instead (see nav_to)."""
    page.goto(f"{base_url}/{url_path.lstrip('/')}")
    wait_idle(page, timeout)
    assert_no_exception(page)


def nav_to(page, title: str, timeout: float = RUN_TIMEOUT) -> None:
    """Click a page's link in the sidebar navigation (keeps session state), wait, assert no exception."""
    nav = page.locator(f'{SIDEBAR} [data-testid="stSidebarNav"] [data-testid="stSidebarNavLink"]')
    nav.get_by_text(title, exact=True).click()  # the link's accessible name starts with its icon
    wait_running(page)
    wait_idle(page, timeout)
    assert_no_exception(page)


def wait_charts(page, count: int = 1, timeout: float = 30_000) -> None:
    """Wait until the main area shows at least `count` drawn plotly charts of any kind."""
    page.wait_for_function(
        "([sel, n]) => document.querySelectorAll(sel).length >= n", arg=[CHART, count],
        timeout=timeout, polling=200)


def wait_heatmaps(page, count: int = 1, timeout: float = 30_000):
    """Wait until the main area shows at least `count` drawn plotly heatmaps (plotly.js loads
    lazily: a chart is a skeleton for a moment after the script is idle); return the locator."""
    page.wait_for_function(
        "([sel, n]) => document.querySelectorAll(sel).length >= n", arg=[HEATMAP, count],
        timeout=timeout, polling=200)
    return page.locator(HEATMAP)


def drag_a_box(page, whole: int) -> None:
    """Drag a box over the first map (30-40% across, 30-45% down) and wait until the link's query
    window is no longer the whole text of `whole` tokens: the zoom the app applies on the next run."""
    import urllib.parse

    heatmap = wait_heatmaps(page).first
    heatmap.scroll_into_view_if_needed()
    box = heatmap.bounding_box()
    page.mouse.move(box["x"] + box["width"] * 0.3, box["y"] + box["height"] * 0.3)
    page.mouse.down()
    page.mouse.move(box["x"] + box["width"] * 0.4, box["y"] + box["height"] * 0.45, steps=8)
    page.mouse.up()
    unzoomed = urllib.parse.quote_plus(f"[0, {whole}]")
    page.wait_for_function("w => location.search.includes('zoom_q=') && !location.search.includes('zoom_q=' + w)",
                           arg=unzoomed, timeout=60_000)
    wait_idle(page)
