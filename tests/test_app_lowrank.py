"""AppTest of the low-rank page: each method on a short sample, a tiny pasted text, the spectrum and curves."""
import conftest
from conftest import SHORT_SAMPLE

PAGE = "views/lowrank.py"


def open_page(app, **encode):
    return conftest.open_page(app, PAGE, **encode)


def captions(at) -> str:
    return " ".join(c.value for c in at.caption)


def test_linformer_draws_every_chart(app):
    at = open_page(app, sample=SHORT_SAMPLE)
    at.selectbox(key="p.lowrank.method").set_value("linformer").run()
    assert not at.exception
    assert at.title[0].value == "Low-rank attention"
    # two maps, one query's row, spectrum, error curves, fidelity along the text
    assert len(at.get("plotly_chart")) >= 6
    assert len(at.dataframe) >= 1  # fidelity summary
    labels = [m.label for m in at.metric]
    assert "Negative weight share" in labels and "Effective rank (90%)" in labels
    assert "Method: " in captions(at)  # the spectrum states how it was computed


def test_nystrom_and_svd(app):
    at = open_page(app, sample=SHORT_SAMPLE)
    assert at.selectbox(key="p.lowrank.method").value == "nystrom"  # the default
    assert not at.exception
    assert any(m.label == "Pseudo-inverse residual" for m in at.metric)
    assert "iterative Moore-Penrose method, 6 iterations" in captions(at)
    charts = len(at.get("plotly_chart"))
    assert charts >= 7  # the landmark strip joins the others
    at.selectbox(key="p.lowrank.method").set_value("svd").run()
    at.number_input(key="p.lowrank.rank").set_value(4).run()
    assert not at.exception
    assert any(m.label == "‖P − P_k‖_F / ‖P‖_F" for m in at.metric)
    assert "randomized subspace iteration" in captions(at)  # 2,709 tokens: beyond the exact SVD of "auto"


def test_tiny_pasted_text(app):
    at = open_page(app, source="Paste", text="Tiny <b>text</b>.")
    assert not at.exception
    conftest.dense_map_is_exact(at)
    at.selectbox(key="p.lowrank.method").set_value("linformer").run()
    at.selectbox(key="p.lowrank.projection").set_value("mean").run()
    assert not at.exception
    assert "segment means keep them a distribution" in captions(at)
