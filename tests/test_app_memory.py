"""AppTest of the recurrent-memory page: a short sample, compressive memory on a pasted text, a tiny text."""
import conftest
from conftest import KEEPER, assert_escaped, open_page, open_sample

PAGE = "views/memory.py"
PARAGRAPH = (KEEPER + "<b>Bold?</b> ") * 6


def test_sample_draws_every_chart(app):
    at = open_sample(app, PAGE, "Recurrent memory (Transformer-XL)")
    # timeline, lookback, regions, two maps, query reach, fidelity along the text
    assert len(at.get("plotly_chart")) >= 7
    assert any("beyond reach" in c.value for c in at.caption)
    assert at.metric[0].value != "—"


def test_compressive_memory_on_pasted_text(app):
    at = open_page(app, PAGE, source="Paste", text=PARAGRAPH)
    assert not at.exception
    at.number_input(key="p.memory.segment").set_value(16).run()
    at.number_input(key="p.memory.memory").set_value(8).run()
    at.number_input(key="p.memory.compressed").set_value(4).run()
    at.number_input(key="query").set_value(120).run()
    assert not at.exception
    slots = at.dataframe[0].value
    assert list(slots.columns[:4]) == ["slot", "tokens", "size", "summarizes"] and len(slots) == 4
    assert_escaped(at, "<b>")  # token by token


def test_short_text_long_segment_and_causal(app):
    at = open_page(app, PAGE, source="Paste", text="Tiny text.")
    assert not at.exception
    conftest.dense_map_is_exact(at)
    at.number_input(key="p.memory.segment").set_value(100_000).run()  # clamped: one segment
    at.checkbox(key="p.memory.causal").check().run()
    assert not at.exception
    assert at.metric[0].value == "1"
