"""Shared test setup: no hub access, the repository root importable, small app fixtures."""
import base64
import json
import os
import re
import sys
from pathlib import Path

import numpy as np
import pytest

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

APP = str(ROOT / "app.py")
SHORT_SAMPLE = "The Notched Key"  # the shortest sample written for the project (2,709 tokens)
TIMEOUT = 180


@pytest.fixture
def app():
    """A fresh AppTest of app.py, run once (sidebar drawn, nothing encoded: the link says run=false,
    so it is not the first visit that encodes the default sample on its own)."""
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(APP, default_timeout=TIMEOUT)
    at.query_params["run"] = "false"
    return at.run()


def encode_in_app(at, source="Sample", sample=None, text=None):
    """Choose a text in the sidebar and press Run; returns the AppTest."""
    at.sidebar.radio(key="source").set_value(source).run()
    if sample is not None:
        at.sidebar.selectbox(key="sample").set_value(sample).run()
    if text is not None:
        at.sidebar.text_area(key="pasted").input(text).run()
    at.sidebar.button[0].click().run()
    return at


def open_page(at, page: str, **encode):
    """Encode a text when told which (see encode_in_app), then switch to a page."""
    if encode:
        at = encode_in_app(at, **encode)
    return at.switch_page(page).run()


def figure(chart) -> dict:
    """A plotly chart element's figure as JSON."""
    return json.loads(chart.proto.spec)


def values(x) -> np.ndarray:
    """A plotly data array: a list, or plotly's typed array {dtype, bdata[, shape]}."""
    if isinstance(x, dict) and "bdata" in x:
        out = np.frombuffer(base64.b64decode(x["bdata"]), dtype=np.dtype(x["dtype"]))
        shape = x.get("shape")
        if shape:
            out = out.reshape([int(s) for s in str(shape).split(",")])
        return out
    return np.asarray(x)


def heatmap(at, title: str) -> np.ndarray:
    """z of the heatmap trace in the chart titled `title`."""
    for chart in at.get("plotly_chart"):
        fig = figure(chart)
        if (fig["layout"].get("title") or {}).get("text") == title:
            return values(next(t for t in fig["data"] if t["type"] == "heatmap")["z"])
    raise AssertionError(f"no chart titled {title!r}")


def tokens(at) -> int:
    """The encoded document's token count, as the sidebar states it."""
    return int(next(c.value for c in at.sidebar.caption if " tokens · " in c.value).split(" tokens")[0].replace(",", ""))


def dense_map_is_exact(at) -> None:
    """For a tiny text the page's dense map is at full resolution: n x n, each row a distribution."""
    z = heatmap(at, "Dense")
    assert z.shape == (tokens(at), tokens(at))
    np.testing.assert_allclose((10.0 ** z).sum(1), 1.0, rtol=1e-3)


def said(elements) -> str:
    """Messages as a visitor reads them: the markdown escapes of ui.messages.plain taken out."""
    return " ".join(re.sub(r"\\(.)", r"\1", e.value) for e in elements)
