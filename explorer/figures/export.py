"""Figures out as files: PNG and SVG at publication size, drawn by plotly.js as in the app.

Kaleido (>= 1.0) renders in a headless Chrome or Chromium it finds on PATH (Debian's
/usr/bin/chromium), in choreographer's own download, or at BROWSER_PATH. MathJax is off (no
figure uses TeX, and kaleido would fetch it from a CDN) and plotly.js comes from the plotly
package, so nothing is fetched: export works offline. One browser is kept open on a
background thread, so only the first export pays its start (about 3 s; later ones take 0.3-1 s)
until close(). Without kaleido or a browser, to_png and to_svg raise RuntimeError saying what is
missing, and a page falls back to the chart's own download button (the browser's export).
"""
from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import contextlib
import importlib.util
import threading

import plotly.graph_objects as go

WIDTH, HEIGHT = 1600, 1000  # CSS pixels: a full-width figure
SCALE = 2  # PNG device pixels per CSS pixel: 3200 x 2000 by default
FONT = 18  # base font size for that width (the app's 12 px would read small)
TIMEOUT = 60  # seconds one export may take, browser start included


def unavailable() -> str | None:
    """Why figures cannot be exported here, or None when they can."""
    if importlib.util.find_spec("kaleido") is None:
        return "static export needs the kaleido package (pip install kaleido==1.5.0)"
    from choreographer.browsers.chromium import Chromium

    if Chromium.find_browser(skip_local=False) is None:
        return ("static export found no Chrome or Chromium: install one (Debian: apt-get install chromium) "
                "or name it in BROWSER_PATH")
    return None


def to_png(fig: go.Figure, width: int = WIDTH, height: int = HEIGHT, scale: float = SCALE,
           font_size: int | None = FONT) -> bytes:
    """The figure as PNG bytes, width x height CSS pixels at `scale` device pixels each."""
    return _export(fig, "png", width, height, scale, font_size)


def to_svg(fig: go.Figure, width: int = WIDTH, height: int = HEIGHT, font_size: int | None = FONT) -> bytes:
    """The figure as SVG bytes (vector: text stays text), width x height CSS pixels."""
    return _export(fig, "svg", width, height, 1, font_size)


def close() -> None:
    """Close the export browser now (a server may, when idle: it holds about 1 GB); the next export reopens it."""
    _BROWSER.close()


def _export(fig: go.Figure, fmt: str, width: int, height: int, scale: float, font_size: int | None) -> bytes:
    for name, value in (("width", width), ("height", height), ("scale", scale)):
        if not value > 0:
            raise ValueError(f"export: {name}={value!r} must be positive")
    reason = unavailable()
    if reason:
        raise RuntimeError(reason)
    figure = go.Figure(fig)  # a copy: the page's figure keeps its own size and fonts
    if font_size:
        figure.update_layout(font_size=font_size)
    return _BROWSER.render(figure, {"format": fmt, "width": width, "height": height, "scale": scale})


class _Browser:
    """One kaleido (Chromium with plotly.js loaded) on its own event-loop thread, opened on first
    use and kept; exports run one at a time (Streamlit serves sessions from several threads)."""

    def __init__(self):
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._kaleido = None
        atexit.register(self.close)

    def render(self, fig: go.Figure, opts: dict) -> bytes:
        with self._lock:
            if self._loop is None:
                self._loop = asyncio.new_event_loop()
                threading.Thread(target=self._loop.run_forever, name="figure-export", daemon=True).start()
            job = asyncio.run_coroutine_threadsafe(self._render(fig, opts), self._loop)
            try:
                return job.result(TIMEOUT)
            except concurrent.futures.TimeoutError:
                job.cancel()
                self._run(self._close_kaleido())
                raise RuntimeError(f"figure export took over {TIMEOUT} s; its browser was closed") from None
            except Exception as err:  # kaleido's own errors: the page shows them and falls back
                raise RuntimeError(f"figure export failed: {err}") from err

    async def _render(self, fig: go.Figure, opts: dict) -> bytes:
        if self._kaleido is None:
            import kaleido

            browser = kaleido.Kaleido(mathjax=False, timeout=TIMEOUT)
            await browser.open()
            self._kaleido = browser
        return await self._kaleido.calc_fig(fig, opts=opts)

    async def _close_kaleido(self) -> None:
        browser, self._kaleido = self._kaleido, None
        if browser is not None:
            await browser.close()

    def _run(self, coroutine) -> None:
        with contextlib.suppress(Exception):  # closing a browser that already died: nothing left to close
            asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(10)

    def close(self) -> None:
        """Close the browser and stop the thread (at exit; the next export opens them again)."""
        with self._lock:
            if self._loop is not None:
                self._run(self._close_kaleido())
                self._loop.call_soon_threadsafe(self._loop.stop)
                self._loop = None


_BROWSER = _Browser()
