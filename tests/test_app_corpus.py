"""AppTest of the Corpus page: the bundled example sweep drawn on a first visit, a sweep from a path
and from uploaded bytes, what is not a sweep refused in words, hosted mode reading uploads only, and
a click on a row opening that document, model, layer and head on the Dense attention page."""
import json
import shutil

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import APP, KEEPER, SHORT_SAMPLE, TIMEOUT, figure, said, values
from streamlit.testing.v1 import AppTest

from explorer.analysis import corpus
from explorer.core.bundled import short_name
from explorer.core.encoding import first_tokens, tokenize
from explorer.core.samples import load_sample
from ui import corpus as panel
from ui.texts import content_key

PAGE = "views/corpus.py"


@pytest.fixture(scope="module")
def example() -> pd.DataFrame:
    return corpus.read(corpus.EXAMPLE)


def opened(app):
    at = app.switch_page(PAGE).run()
    assert not at.exception, at.exception
    return at


def on_path(at, path):
    at.radio(key="corpus_source").set_value("path").run()
    return at.text_input(key="corpus_path").input(str(path)).run()


def sink_maps(at) -> dict[str, np.ndarray]:
    """Title -> z of every sink-share heatmap on the page."""
    out = {}
    for chart in at.get("plotly_chart"):
        fig = figure(chart)
        for trace in fig["data"]:
            if trace["type"] == "heatmap":
                out[fig["layout"]["title"]["text"]] = values(trace["z"]).astype(float)
    return out


def shown_rows(at) -> pd.DataFrame:
    return at.dataframe[0].value


def test_the_example_draws_sinks_fidelity_entropy_and_every_row(app, example):
    at = opened(app)
    assert not at.error, [e.value for e in at.error]
    maps = sink_maps(at)
    assert maps  # SmolLM2's heads past the first layers are sinks
    for model, shape in (("minilm", (6, 12)), ("smollm2", (30, 9))):  # layers x heads
        grid = corpus.sink_grid(example, model)
        title = next((t for t in maps if t.startswith(short_name(model))), None)  # named, not by its key
        if grid.sinks.any():
            assert maps[title].shape == shape
            np.testing.assert_allclose(maps[title], grid.share * 100)
        else:  # no map of zeros: a sentence
            assert title is None and f"{short_name(model)}: no head is a sink in any document" in said(at.info)
    texts = json.dumps([figure(c)["layout"] for c in at.get("plotly_chart")])
    assert "Output error (relative)" in texts
    assert not any(col in texts for col in ("output_rel_error", "normalised_entropy", "topk_recall"))
    assert "Normalised entropy against length" in texts  # the example measures every text at several lengths
    fine = corpus.split(example)[0]
    rows = shown_rows(at)
    assert len(rows) == len(fine) and set(rows.model) == set(fine.model)
    assert set(rows.model_shown) == {short_name(m) for m in fine.model}  # the table says "MiniLM 22M...", not minilm
    labels = json.loads(at.dataframe[0].proto.columns)
    assert labels["output_rel_error"]["label"] == "Output error"  # a short header; its meaning on hover


def test_the_model_filter_narrows_every_section(app, example):
    at = opened(app)
    at.selectbox(key="corpus_model").set_value("smollm2").run()
    assert not at.exception
    assert [z.shape for z in sink_maps(at).values()] == [(30, 9)]
    rows = shown_rows(at)
    assert set(rows.model) == {"smollm2"}
    at.selectbox(key="corpus_layer").set_value(20).run()
    rows = shown_rows(at)
    assert set(rows.layer) == {20} and len(rows) == len(corpus.split(example[(example.model == "smollm2")
                                                                              & (example.layer == 20)])[0])


def test_a_sweep_on_a_path_and_as_uploaded_bytes_reads_as_the_example(app, example, tmp_path):
    copy = tmp_path / "sweep"
    shutil.copytree(corpus.EXAMPLE, copy)
    at = on_path(opened(app), copy)
    assert not at.exception and not at.error, [e.value for e in at.error]
    assert len(shown_rows(at)) == len(corpus.split(example)[0])
    parts = sorted(copy.rglob("*.parquet"))
    uploaded = panel.read(tuple(panel.Upload(str(p), p.read_bytes()) for p in parts))  # what the uploader hands on
    order = ["document", "model", "layer", "head", "mechanism", "params"]
    pd.testing.assert_frame_equal(uploaded.sort_values(order, ignore_index=True),
                                  example.sort_values(order, ignore_index=True))


def entropy_chart(at) -> dict:
    return next(figure(c) for c in at.get("plotly_chart")
                if figure(c)["layout"].get("title", {}).get("text") == "Normalised entropy against length")


def test_entropy_joins_each_documents_lengths(app, example):
    chart = entropy_chart(opened(app))
    expected = corpus.entropy_by_length(example)
    assert expected.groupby(["model", "source"]).size().min() > 1  # every document at several lengths
    assert len(chart["data"]) == len(expected.groupby(["model", "source"]))
    for trace in chart["data"]:
        model, document = trace["legendgroup"], trace["name"]
        assert trace["legendgrouptitle"]["text"] == short_name(model)
        part = expected[(expected.model == model) & (expected.document == document)].sort_values("tokens")
        np.testing.assert_array_equal(values(trace["x"]), part.tokens)
        np.testing.assert_allclose(values(trace["y"]), part.entropy)
    assert chart["layout"]["xaxis"]["type"] == "log"


def test_a_sweep_of_one_length_per_document_says_what_its_points_compare(app, example, tmp_path):
    longest = example[example.tokens == example.groupby(["model", "source"]).tokens.transform("max")]
    sources = sorted(example.source.unique())
    varied = longest.assign(tokens=[1000 * (1 + sources.index(s)) for s in longest.source])
    pq.write_table(pa.Table.from_pandas(varied, schema=corpus.SCHEMA, preserve_index=False), tmp_path / "v.parquet")
    at = on_path(opened(app), tmp_path / "v.parquet")
    assert all(len(values(t["x"])) == 1 for t in entropy_chart(at)["data"])
    assert any("Every document was measured at one length" in c.value for c in at.caption)
    same = longest.assign(tokens=2048)
    pq.write_table(pa.Table.from_pandas(same, schema=corpus.SCHEMA, preserve_index=False), tmp_path / "s.parquet")
    at = on_path(opened(app), tmp_path / "s.parquet")
    assert "Every document was measured on 2,048 tokens, so there is no length" in said(at.info)
    assert not any(figure(c)["layout"].get("title", {}).get("text") == "Normalised entropy against length"
                   for c in at.get("plotly_chart"))


def test_what_is_not_a_sweep_gets_a_clear_message(app, tmp_path):
    pq.write_table(pa.table({"document": ["a"], "score": [1.0]}), tmp_path / "other.parquet")
    (tmp_path / "notes.txt").write_text("not parquet", encoding="utf-8")
    at = on_path(opened(app), tmp_path / "other.parquet")
    assert not at.exception
    message = said(at.error)
    assert "not a corpus sweep" in message and "lacks the columns source, text_tokens, tokens, model" in message
    assert not at.get("plotly_chart") and not at.dataframe
    at = at.text_input(key="corpus_path").input(str(tmp_path / "notes.txt")).run()
    assert "not a Parquet file" in said(at.error)
    at = at.text_input(key="corpus_path").input(str(tmp_path / "absent")).run()
    assert "no file or folder" in said(at.error)


def test_failed_documents_are_listed_apart_with_their_error_escaped(app, example, tmp_path):
    failed = example.iloc[:1].assign(document="bad <b>file</b>.txt", layer=-1, head=-1, mechanism="",
                                     error="UnicodeDecodeError: <script>alert(1)</script>")
    pq.write_table(pa.Table.from_pandas(pd.concat([example, failed]), schema=corpus.SCHEMA, preserve_index=False),
                   tmp_path / "with-error.parquet")
    at = on_path(opened(app), tmp_path / "with-error.parquet")
    assert not at.exception and not at.error
    listed = [m.value for m in at.markdown if "alert" in m.value]
    assert len(listed) == 1 and "<script>" not in listed[0] and "\\<script\\>" in listed[0]
    assert "bad <b>file</b>.txt" not in set(shown_rows(at).document)


def test_a_hosted_demo_reads_uploads_only_up_to_its_cap(monkeypatch):
    monkeypatch.setenv("EXPLORER_HOSTED", "1")
    monkeypatch.setenv("EXPLORER_SWEEP_MB", "5")
    at = AppTest.from_file(APP, default_timeout=TIMEOUT)
    at.query_params.update({"run": "false", "corpus_source": '"path"', "corpus_path": '"/etc"'})  # a link asks
    at = opened(at.run())
    source = at.radio(key="corpus_source")
    assert source.options == ["the bundled example", "uploaded files"] and source.value == "example"
    assert "corpus_source: this demo reads only uploaded sweeps" in said(at.warning)
    assert not at.text_input and sink_maps(at)
    at.radio(key="corpus_source").set_value("upload").run()
    assert [u.proto.max_upload_size_mb for u in at.main.get("file_uploader")] == [5]


def pick_row(at, document: str, model: str, layer: int, head: int):
    """Filter the table to the dense rows of `model` and `layer`, then click the row of `document` and `head`."""
    at.selectbox(key="corpus_model").set_value(model).run()
    at.selectbox(key="corpus_mechanism").set_value("Dense attention").run()
    at.selectbox(key="corpus_layer").set_value(layer).run()
    rows = shown_rows(at)
    i = int(np.flatnonzero((rows.document == document).to_numpy() & (rows["head"] == head).to_numpy())[0])
    at.session_state[at.dataframe[0].key] = {"selection": {"rows": [i], "columns": [], "cells": []}}  # a click
    return at.run()


def test_a_click_on_a_row_opens_its_document_layer_and_head_at_the_length_measured(app, example):
    document = example[example.source == f"sample:{SHORT_SAMPLE}"].document.iloc[0]
    at = pick_row(opened(app), document, "minilm", 3, 7)
    assert not at.exception and not at.error, [e.value for e in at.error]
    assert at.title[0].value == "Dense attention"
    enc = at.session_state["encoded"]
    row = example[(example.source == f"sample:{SHORT_SAMPLE}") & (example.model == "minilm")].iloc[0]
    assert row.tokens == 512 < row.text_tokens  # the first row of the sample: its first 512 tokens
    measured = first_tokens(load_sample(SHORT_SAMPLE), "minilm", 512)  # what the sweep encoded
    assert (enc.model, enc.layer, enc.text_key) == ("minilm", 3, content_key(measured))
    assert at.session_state["head"] == 7
    assert f"its first 512 of {row.text_tokens:,} tokens, as the sweep measured it" in said(at.info)


@pytest.mark.parametrize("kind", ["txt", "jsonl"])
def test_a_row_of_a_file_opens_when_this_server_can_read_it(app, example, tmp_path, monkeypatch, kind):
    monkeypatch.setenv("EXPLORER_TEXT_DIR", str(tmp_path / "store"))  # the opened text is kept there for its link
    if kind == "txt":
        (tmp_path / "keeper.txt").write_text(KEEPER, encoding="utf-8")
        source = str(tmp_path / "keeper.txt")
    else:  # the second line of a JSONL file, as the sweep names it
        lines = [{"text": "another text"}, {"text": KEEPER, "name": "keeper"}]
        (tmp_path / "texts.jsonl").write_text("\n".join(map(json.dumps, lines)), encoding="utf-8")
        source = f"{tmp_path / 'texts.jsonl'}#2"
    rows = example[example.source == f"sample:{SHORT_SAMPLE}"].assign(document="keeper", source=source)
    gone = rows.assign(document="gone.txt", source=str(tmp_path / "gone.txt"))
    pq.write_table(pa.Table.from_pandas(pd.concat([rows, gone]), schema=corpus.SCHEMA, preserve_index=False),
                   tmp_path / "files.parquet")
    at = pick_row(on_path(opened(app), tmp_path / "files.parquet"), "gone.txt", "minilm", 1, 2)
    assert "not available here" in said(at.warning) and at.title[0].value == "Corpus"
    at = pick_row(at, "keeper", "minilm", 1, 2)
    assert not at.exception and at.title[0].value == "Dense attention"
    enc = at.session_state["encoded"]
    assert (enc.layer, enc.text_key, at.session_state["head"]) == (1, content_key(KEEPER), 2)
    count = len(tokenize(KEEPER, "minilm")[0])  # the rows are the sample's: the file holds fewer tokens
    assert f"all {count:,} of its tokens" in said(at.info) and "The sweep counted 2,707 tokens" in said(at.info)
    assert (tmp_path / "store" / f"{content_key(KEEPER)}.txt").exists()
