"""The sweep's needle table (python -m explorer.sweep ... --needle) on two short texts and a broken file,
with a random-weight Llama and MiniLM: a row per (document, model, mechanism, position) equal to
explorer.needle_probe's, an error row for an encoder and an unreadable text, a resumed sweep measuring
nothing twice, the head table read as before beside it; the Corpus page's curve over documents."""
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import corpus_folder, figure, values

import explorer
from explorer.analysis import needle_corpus
from explorer.figures import needle as figs
from explorer.sweep import read
from explorer.sweep.__main__ import main
from explorer.sweep.inputs import read_inputs
from explorer.sweep.needle import NeedleSettings, needle_settings, sweep_needle

TEXTS = {"keeper.txt": "The keeper hid the notched key under the third stair. Years later a child found it. " * 5,
         "river.md": "Rivers carry silt to the sea. The delta grows a little every spring, and the reeds follow. " * 4}
ASK = dict(positions=(0.0, 1.0), max_tokens=96)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return corpus_folder(tmp_path_factory.mktemp("needle-corpus"), TEXTS)


@pytest.fixture(scope="module")
def swept(corpus, causal_llama, tmp_path_factory):
    out = tmp_path_factory.mktemp("needle-sweep") / "sweep"
    settings, left = needle_settings(mechanisms=["sinks:sinks=2,window=16", "lowrank"], **ASK)
    assert left == ["lowrank"] and [s.name for s in settings.mechanisms] == ["sinks"]
    ran, held, _ = sweep_needle([corpus], out, [causal_llama, "minilm"], settings)
    assert (ran, held) == (6, 0)
    return out, needle_corpus.read(out)


def test_a_row_per_document_model_mechanism_and_position_as_the_probe_gives_them(swept, corpus, causal_llama):
    _, table = swept
    fine = table[table.error == ""]
    assert len(fine) == 2 * 2 * 2 and set(fine.model) == {causal_llama}  # documents x mechanisms x positions
    doc = next(d for d in read_inputs([corpus]) if d.name == "keeper.txt")
    for mechanism, params in ((None, None), ("sinks", {"sinks": 2, "window": 16})):
        probe = explorer.needle_probe(doc.text, model=causal_llama, mechanism=mechanism, params=params, **ASK)
        rows = fine[(fine.source == doc.source) & (fine.mechanism == (mechanism or "dense"))].sort_values("position")
        np.testing.assert_allclose(rows.answer_prob, probe.answer_prob, rtol=1e-5)
        assert rows.token_position.tolist() == probe.token_positions.tolist()
        assert rows.tokens.max() <= 96 and (rows.text_tokens == probe.text_tokens).all()
        for row, score in zip(rows.itertuples(), probe.retrieval):
            passing = {f"{a}.{b}" for a, b in np.argwhere(score > 0.1)}
            assert set(row.retrieval_heads) == passing and list(row.retrieval_scores) == sorted(
                row.retrieval_scores, reverse=True)
    assert (fine[fine.mechanism == "sinks"].params == '{"causal":true,"sinks":2,"window":16}').all()


def test_an_encoder_and_an_unreadable_text_are_error_rows(swept):
    _, table = swept
    failed = table[table.error != ""]
    assert len(failed) == 2 + 2  # MiniLM on both texts, and the Latin-1 file under either model
    unreadable = failed.source.str.endswith("latin1.txt")
    assert failed[~unreadable].model.eq("minilm").all() and failed[~unreadable].error.str.contains("is an encoder").all()
    assert failed[unreadable].error.str.contains("cannot read").all() and failed[unreadable].position.isna().all()


def test_a_resumed_needle_sweep_measures_nothing_twice_and_refuses_other_settings(swept, corpus, causal_llama):
    out, _ = swept
    settings, _ = needle_settings(mechanisms=["sinks:sinks=2,window=16"], **ASK)
    assert sweep_needle([corpus], out, [causal_llama, "minilm"], settings)[:2] == (0, 6)
    with pytest.raises(ValueError, match="other settings"):
        sweep_needle([corpus], out, [causal_llama], NeedleSettings(max_tokens=64))


def test_the_command_line_writes_both_tables(corpus, causal_llama, tmp_path, capsys):
    out = tmp_path / "out"
    main([str(corpus / "keeper.txt"), "--out", str(out), "--engine", "local", "--models", causal_llama, "--layers", "0",
          "--heads", "0", "--rows", "8", "--mechanisms", "lowrank:rank=4", "--max-tokens", "80", "--needle",
          "--needle-positions", "0.5"])
    err = capsys.readouterr().err
    assert "--needle leaves out lowrank" in err and "needle: 1 (document, model) asked" in err
    heads = read(out).to_pandas()  # the head table reads the folder as before: the needle table is apart
    assert set(heads.mechanism) == {"dense", "lowrank"} and (heads.error == "").all()
    table = needle_corpus.read(out)
    assert table.position.tolist() == [0.5] and table.tokens.max() <= 80 and (table.mechanism == "dense").all()


@pytest.mark.parametrize("flags, message", [
    (["--fact", "A fact."], "--fact set what --needle asks: add --needle"),
    (["--needle", "--needle-positions", "1.5"], "positions must lie between 0"),
    (["--needle", "--answer", " "], "the answer is empty"),
])
def test_bad_needle_flags_are_refused_before_anything_runs(flags, message, corpus, tmp_path, capsys):
    with pytest.raises(SystemExit) as stop:
        main([str(corpus / "keeper.txt"), "--out", str(tmp_path / "out"), "--engine", "local", *flags])
    assert stop.value.code == 2 and message in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def _table(rows: list[dict]) -> pd.DataFrame:
    base = {"source": "", "params": "{}", "token_position": 0, "tokens": 100, "text_tokens": 90, "answer_rank": 1,
            "retrieval_heads": [], "retrieval_scores": [], "seconds": 0.1, "error": ""}
    return pd.DataFrame([{**base, "source": r["document"], **r} for r in rows])


def test_the_corpus_curve_is_the_median_and_range_over_documents():
    probs = {"a": [0.9, 0.1], "b": [0.5, 0.3], "c": [0.7, 0.8]}
    rows = [{"document": d, "model": "smollm2", "mechanism": "dense", "position": pos, "answer_prob": p}
            for d, ps in probs.items() for pos, p in zip((0.0, 1.0), ps)]
    rows += [{"document": "a", "model": "smollm2", "mechanism": "sinks", "params": '{"window":8}', "position": 0.0,
              "answer_prob": 0.0}, {"document": "x", "model": "smollm2", "mechanism": "", "position": float("nan"),
                                    "answer_prob": float("nan"), "error": "ValueError: too short"}]
    curves = needle_corpus.curves(_table(rows))
    dense = curves[curves.mechanism == "dense"].sort_values("position")
    assert dense["median"].tolist() == [0.7, 0.3] and dense.low.tolist() == [0.5, 0.1]
    assert dense.high.tolist() == [0.9, 0.8] and dense.documents.tolist() == [3, 3]
    assert curves.mechanism.tolist()[-1] == "dense"  # dense drawn last, on top
    fig = figs.corpus_chart(curves, "smollm2")
    lines = {t["name"]: t for t in fig.to_plotly_json()["data"] if t.get("mode") == "lines+markers"}
    np.testing.assert_allclose(values(lines["Dense attention"]["y"]), [0.7, 0.3])
    assert set(lines) == {"Dense attention", "Sink + window (StreamingLLM)"}
    bands = [t for t in fig.to_plotly_json()["data"] if t.get("fill") == "toself"]
    assert len(bands) == 2 and all(t["mode"] == "lines" for t in bands)  # no stray markers in the default colours


def test_the_corpus_page_draws_a_sweeps_needle_table(app, tmp_path):
    from explorer.analysis import corpus as heads

    sweep = tmp_path / "sweep"
    sweep.mkdir()
    pq.write_table(pq.read_table(next(heads.EXAMPLE.glob("*.parquet"))), sweep / "heads.parquet")
    model = pq.read_table(sweep / "heads.parquet").column("model")[0].as_py()
    rows = [{"document": d, "model": model, "mechanism": "dense", "position": pos, "answer_prob": p}
            for d, ps in {"a": [0.2, 0.6], "b": [0.4, 1.0]}.items() for pos, p in zip((0.0, 1.0), ps)]
    needle_corpus.folder(sweep).mkdir()
    pq.write_table(pa.Table.from_pandas(_table(rows), schema=needle_corpus.SCHEMA, preserve_index=False),
                   needle_corpus.folder(sweep) / "part.parquet")
    at = app.switch_page("views/corpus.py").run()
    at.radio(key="corpus_source").set_value("path").run()
    at = at.text_input(key="corpus_path").input(str(sweep)).run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    chart = next(figure(c) for c in at.get("plotly_chart")
                 if figure(c)["layout"].get("title", {}).get("text") == "Answer probability against where the fact sits")
    line = next(t for t in chart["data"] if t.get("mode") == "lines+markers")
    np.testing.assert_allclose(values(line["y"]), [0.3, 0.8])


def test_uploaded_needle_parts_read_as_the_folder_does():
    """The Corpus page's uploads: the needle parts of a whole sweep folder give the folder's table."""
    from explorer.analysis import corpus as heads

    parts = sorted(needle_corpus.folder(heads.EXAMPLE).glob("*.parquet"))
    assert parts and all(heads.holds(p.read_bytes(), needle_corpus.SCHEMA) for p in parts)
    order = ["source", "model", "mechanism", "position"]
    uploaded = needle_corpus.read([p.read_bytes() for p in parts]).sort_values(order, ignore_index=True)
    pd.testing.assert_frame_equal(uploaded, needle_corpus.read(heads.EXAMPLE).sort_values(order, ignore_index=True))
