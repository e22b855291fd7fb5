"""Tables saved across restarts (ui.saved): read back bit for bit, keyed by everything they came
from, and the content heads a fresh process reads equal to those it would measure."""
import pandas as pd
import pytest
import torch

from explorer.analysis import windows
from explorer.core.samples import load_sample
from ui import compute, saved
from ui.cache import store
from ui.state import EVERY, Encoding


def test_a_table_reads_back_exactly_and_the_oldest_goes_first(tmp_path):
    shelf = saved.Saved(tmp_path, max_files=2)
    tables = {f"t{i}": pd.DataFrame({"layer": [i, 1], "share": [1 / 3 + i, float("nan")]}) for i in range(3)}
    for name, table in tables.items():
        shelf.put(name, table)
    assert shelf.get("t0") is None and shelf.get("missing") is None
    pd.testing.assert_frame_equal(shelf.get("t2"), tables["t2"], check_exact=True)
    (tmp_path / "t1.parquet").write_bytes(b"not parquet")
    assert shelf.get("t1") is None  # damaged: made again, never shown


def test_the_key_changes_with_one_weight_the_text_or_the_code():
    model = torch.nn.Linear(4, 3)
    before = saved.weights_key(model)
    with torch.no_grad():
        model.weight[1, 2] = torch.nextafter(model.weight[1, 2], torch.tensor(9.0))
    assert saved.weights_key(model) != before
    assert saved.key("t", "a", 0, code=(windows,)) == saved.key("t", "a", 0, code=(windows,))
    assert saved.key("t", "a", 0, code=(windows,)) != saved.key("t", "b", 0, code=(windows,))
    assert saved.key("t", "a", 0, code=(windows,)) != saved.key("t", "a", 0, code=(saved,))


@pytest.fixture
def fresh(monkeypatch, tmp_path):
    monkeypatch.setenv("EXPLORER_SAVED_DIR", str(tmp_path))
    store().clear()
    yield tmp_path
    store().clear()


def test_content_heads_come_back_from_disk_as_measured(fresh):
    text = load_sample("The Notched Key")[:3000]  # about 650 tokens: two MiniLM windows
    enc = Encoding.of_text(text, "minilm", 0, 0)
    measured = compute.content_heads(enc)  # nothing saved yet: measured on a capture of every layer
    assert ("capture", enc.at(EVERY)) in store() and len(list(fresh.glob("*.parquet"))) == 1
    store().clear()  # a restarted server: nothing in memory
    again = compute.content_heads(enc)
    pd.testing.assert_frame_equal(again, measured, check_exact=True)
    assert ("capture", enc.at(EVERY)) not in store()  # read from disk: no layer was encoded for it
