"""Shared test setup: no hub access, the repository root importable, small app fixtures."""
import os
import sys
from pathlib import Path

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
    """A fresh AppTest of app.py, run once (sidebar drawn, nothing encoded)."""
    from streamlit.testing.v1 import AppTest

    return AppTest.from_file(APP, default_timeout=TIMEOUT).run()


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
