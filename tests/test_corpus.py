"""The corpus sweep library (explorer.analysis.corpus) and its figures: reading a sweep from a
folder, a file or bytes; refusing what is not one; and every summary against a brute-force loop
over the rows, on a table built here and on the bundled example."""
import html
import io
import math
from collections import defaultdict

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from explorer.analysis import corpus
from explorer.analysis.sinks import THRESHOLD
from explorer.figures import corpus as figs

MODELS = {"enc": (2, 3), "dec": (3, 2)}  # model -> (layers, heads)
MECHS = {"dense": ["{}"], "lsh": ['{"n_buckets":8}', '{"n_buckets":16}'], "lowrank": ['{"rank":4}']}


def sweep_rows(seed: int = 0) -> pd.DataFrame:
    """A small sweep: three documents measured at one, two and three lengths, two models, dense and
    two mechanisms (lsh at two settings), errors spanning decades, and one failed document."""
    rng = np.random.default_rng(seed)
    rows = []
    for name, n, tokens in [("a.txt", 300, 300), ("b <b>bold</b>.txt", 2000, 512), ("b <b>bold</b>.txt", 2000, 2000),
                            ("c.jsonl#2", 40_000, 512), ("c.jsonl#2", 40_000, 4096), ("c.jsonl#2", 40_000, 30_000)]:
        for model, (layers, heads) in MODELS.items():
            for layer in range(layers):
                for head in range(heads):
                    mass = float(rng.uniform(0, 0.7))
                    for mech, settings in MECHS.items():
                        for params in settings:
                            dense = mech == "dense"
                            rows.append(dict(
                                document=name, source=f"/corpus/{name}", text_tokens=n, tokens=tokens,
                                model=model, layer=layer, head=head, mechanism=mech, rows=256,
                                params=params.replace("{", '{"causal":true,' if model == "dec" else "{", 1)
                                if params != "{}" else params,
                                output_rel_error=0.0 if dense else float(10 ** rng.uniform(-4, 0)),
                                total_variation=0.0 if dense else float(rng.uniform(0.1, 0.5)),
                                topk_recall=1.0 if dense else float(rng.uniform(0.4, 1)),
                                entropy_mean=float(rng.uniform(1, 5)), normalised_entropy=float(rng.uniform(0, 1)),
                                max_weight_mean=float(rng.uniform(0, 1)), first_token_mass=mass,
                                sink=mass > THRESHOLD, seconds=0.01, error=""))
    rows.append(dict(document="broken.txt", source="/corpus/broken.txt", text_tokens=-1, tokens=-1, model="enc",
                     layer=-1, head=-1, mechanism="", params="", rows=0, output_rel_error=math.nan,
                     total_variation=math.nan, topk_recall=math.nan, entropy_mean=math.nan,
                     normalised_entropy=math.nan, max_weight_mean=math.nan, first_token_mass=math.nan, sink=False,
                     seconds=0.0, error="UnicodeDecodeError: <script>x</script>"))
    return pd.DataFrame(rows)


def as_table(frame: pd.DataFrame, schema: pa.Schema = corpus.SCHEMA) -> pa.Table:
    return pa.Table.from_pandas(frame, schema=schema, preserve_index=False)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """The sweep as a dataset folder of two part files, as a distributed writer leaves it."""
    path = tmp_path_factory.mktemp("sweep")
    table = as_table(sweep_rows())
    half = table.num_rows // 2
    pq.write_table(table.slice(0, half), path / "part-0.parquet")
    pq.write_table(table.slice(half), path / "part-1.parquet")
    return path


@pytest.fixture(scope="module", params=["built", "example"])
def sweep(request, folder):
    return corpus.read(folder if request.param == "built" else corpus.EXAMPLE)


def test_a_folder_a_file_and_bytes_read_the_same_sweep(folder, tmp_path):
    from_folder = corpus.read(folder)
    one = tmp_path / "one.parquet"
    pq.write_table(as_table(sweep_rows()), one)
    pd.testing.assert_frame_equal(corpus.read(one), from_folder)
    pd.testing.assert_frame_equal(corpus.read(one.read_bytes()), from_folder)
    assert list(from_folder.columns) == corpus.SCHEMA.names and len(from_folder) == len(sweep_rows())
    assert corpus.read(one).dtypes.equals(from_folder.dtypes)


def test_narrower_number_types_are_read_as_the_contract_says(tmp_path):
    schema = pa.schema([pa.field(f.name, pa.int32() if f.type == pa.int64() else
                                 pa.float32() if f.type == pa.float64() else f.type) for f in corpus.SCHEMA])
    pq.write_table(as_table(sweep_rows(), schema), tmp_path / "narrow.parquet")
    frame = corpus.read(tmp_path / "narrow.parquet")
    assert frame.layer.dtype == np.int64 and frame.output_rel_error.dtype == np.float64


@pytest.mark.parametrize("drop", [["sink"], ["first_token_mass", "topk_recall"]])
def test_a_parquet_without_the_columns_of_a_sweep_names_them(tmp_path, drop):
    path = tmp_path / "other.parquet"
    pq.write_table(as_table(sweep_rows()).drop_columns(drop), path)
    with pytest.raises(ValueError, match="not a corpus sweep") as caught:
        corpus.read(path)
    missing = str(caught.value).split("lacks the columns ")[1].split(" (")[0]
    assert missing.split(", ") == [c for c in corpus.SCHEMA.names if c in drop]


def test_a_column_of_the_wrong_kind_is_named(tmp_path):
    frame = sweep_rows().assign(layer=lambda f: f.layer.astype(str))
    schema = pa.schema([pa.field("layer", pa.string()) if f.name == "layer" else f for f in corpus.SCHEMA])
    pq.write_table(as_table(frame, schema), tmp_path / "typed.parquet")
    with pytest.raises(ValueError, match=r"wrong types in layer \(string, expected int64\)"):
        corpus.read(tmp_path / "typed.parquet")


def test_what_is_not_parquet_is_refused_in_words(tmp_path):
    (tmp_path / "notes.parquet").write_text("just some text", encoding="utf-8")
    with pytest.raises(ValueError, match="not a Parquet file"):
        corpus.read(tmp_path / "notes.parquet")
    with pytest.raises(ValueError, match="not a Parquet file"):
        corpus.read(b"PK\x03\x04 a zip, not parquet")
    with pytest.raises(ValueError, match="no file or folder"):
        corpus.read(tmp_path / "absent")
    pq.write_table(as_table(sweep_rows().iloc[:0]), tmp_path / "empty.parquet")
    with pytest.raises(ValueError, match="no rows"):
        corpus.read(tmp_path / "empty.parquet")


def test_failed_documents_are_kept_apart(folder):
    fine, failed = corpus.split(corpus.read(folder))
    assert len(failed) == 1 and failed.iloc[0].error.startswith("UnicodeDecodeError")
    assert (fine.error == "").all() and len(fine) == len(sweep_rows()) - 1
    assert (failed.layer == -1).all()


def test_a_mechanism_swept_at_two_settings_is_two_mechanisms(folder):
    names = set(corpus.compared(corpus.read(folder)).shown)  # causal=true on the decoder does not split them
    assert names == {"LSH attention (Reformer), n_buckets=8", "LSH attention (Reformer), n_buckets=16",
                     "Low-rank attention"}


def brute_records(frame: pd.DataFrame) -> list[dict]:
    return [r for r in frame.to_dict("records") if r["error"] == ""]


def test_fidelity_summary_is_the_quantiles_of_each_mechanism_and_model(sweep):
    summary = corpus.fidelity_summary(sweep)
    values = defaultdict(list)
    for r in brute_records(corpus.named(sweep)):
        if r["mechanism"] != "dense":
            values[r["shown"], r["model"]].append(r)
    assert set(summary.index) == set(values) and values
    for key, records in values.items():
        assert summary.loc[key, "measured"] == len(records)
        for measure in corpus.FIDELITY:
            column = np.array([r[measure] for r in records])
            for name, q in corpus.QUANTILES.items():
                assert summary.loc[key, f"{measure} {name}"] == pytest.approx(np.quantile(column, q))


def test_sink_grid_counts_documents_where_each_head_is_a_sink(sweep):
    for model in sweep.model[sweep.error == ""].unique():
        grid = corpus.sink_grid(sweep, model)
        dense = [r for r in brute_records(sweep) if r["model"] == model and r["mechanism"] == "dense"]
        longest = defaultdict(int)  # each document counts once, at the longest length measured
        for r in dense:
            longest[r["source"]] = max(longest[r["source"]], r["tokens"])
        dense = [r for r in dense if r["tokens"] == longest[r["source"]]]
        sinks, seen = defaultdict(int), defaultdict(int)
        for r in dense:
            seen[r["layer"], r["head"]] += 1
            sinks[r["layer"], r["head"]] += r["first_token_mass"] > THRESHOLD
        assert grid.layers == sorted({l for l, _ in seen}) and grid.heads == sorted({h for _, h in seen})
        assert grid.top == max(r["first_token_mass"] for r in dense)
        for (layer, head), count in seen.items():
            i, j = grid.layers.index(layer), grid.heads.index(head)
            assert (grid.sinks[i, j], grid.documents[i, j]) == (sinks[layer, head], count)
            assert grid.share[i, j] == pytest.approx(sinks[layer, head] / count)
    with pytest.raises(ValueError, match="no dense rows for the model 'absent'"):
        corpus.sink_grid(sweep, "absent")


def test_entropy_by_length_is_each_documents_mean_over_heads_at_each_length(sweep):
    table = corpus.entropy_by_length(sweep).set_index(["model", "source", "tokens"])
    groups = defaultdict(list)
    for r in brute_records(sweep):
        if r["mechanism"] == "dense":
            groups[r["model"], r["source"], r["tokens"]].append(r)
    assert set(table.index) == set(groups) and table.index.is_unique
    for key, records in groups.items():
        entropy = [r["normalised_entropy"] for r in records]
        assert table.loc[key, "entropy"] == pytest.approx(np.mean(entropy))
        assert table.loc[key, "p10"] == pytest.approx(np.quantile(entropy, 0.1))
        assert table.loc[key, "p90"] == pytest.approx(np.quantile(entropy, 0.9))
        assert table.loc[key, "heads"] == len(records)
        assert table.loc[key, "document"] == records[0]["document"]


def test_a_sample_source_names_its_title():
    assert corpus.sample_title("sample:The Notched Key") == "The Notched Key"
    assert corpus.sample_title("/x/c.jsonl#12") is None


def test_the_example_covers_both_models_whole():
    example = corpus.read(corpus.EXAMPLE)
    assert {"minilm", "smollm2"} <= set(example.model)
    documents = example[example.error == ""].document.nunique()
    for model, shape in (("minilm", (6, 12)), ("smollm2", (30, 9))):
        grid = corpus.sink_grid(example, model)
        assert grid.share.shape == shape and (grid.documents == documents).all()
    assert len(corpus.compared(example)) > 0


def test_sink_map_draws_the_share_in_percent_with_counts(folder):
    grid = corpus.sink_grid(corpus.read(folder), "dec")
    trace = figs.sink_share_map(grid).data[0]
    np.testing.assert_allclose(np.asarray(trace.z, dtype=float), grid.share * 100)
    assert (trace.zmin, trace.zmax) == (0, 100)
    np.testing.assert_array_equal(np.asarray(trace.customdata)[..., 0], grid.sinks)
    np.testing.assert_array_equal(np.asarray(trace.customdata)[..., 1], grid.documents)


def test_fidelity_boxes_draw_the_summary_on_a_log_axis_when_errors_span_decades(folder):
    summary = corpus.fidelity_summary(corpus.read(folder))
    fig = figs.fidelity_boxes(summary)
    boxes = [t for t in fig.data if t.xaxis == "x"]  # the output error panel
    assert len(boxes) == len(MODELS)
    for box in boxes:
        model = next(m for m in MODELS if box.name == m)
        part = summary.xs(model, level="model").reindex([html.unescape(y) for y in box.y])
        np.testing.assert_allclose(box.median, part["output_rel_error median"])
        np.testing.assert_allclose(box.lowerfence, part["output_rel_error p10"])
    assert fig.layout.xaxis.type == "log"  # errors drawn from 1e-4 to 1
    assert fig.layout.xaxis2.type != "log"  # total variation within 0.1 to 0.5
    titles = {a.text for a in fig.layout.annotations}
    assert titles == {"Output error (relative)", "Total variation", "Top-k recall"}


def test_entropy_chart_joins_each_documents_lengths_and_escapes_names(folder):
    table = corpus.entropy_by_length(corpus.read(folder))
    fig = figs.entropy_against_length(table)
    drawn = {(t.legendgroup, html.unescape(t.name)): t for t in fig.data}
    assert len(drawn) == len(fig.data) == len(table.groupby(["model", "source"]))  # a line per document and model
    for (model, document), part in table.groupby(["model", "document"]):
        trace = drawn[model, document]
        part = part.sort_values("tokens")
        np.testing.assert_array_equal(trace.x, part.tokens)
        np.testing.assert_allclose(trace.y, part.entropy)
        assert trace.mode == "markers+lines" and trace.legendgrouptitle.text == model and trace.showlegend
        assert {str(c[0]) for c in trace.customdata} == {html.escape(document, quote=False)}
    assert sorted(len(t.x) for t in fig.data if t.legendgroup == "enc") == [1, 2, 3]
    for model in MODELS:  # a colour per model, a marker per document
        mine = [t for t in fig.data if t.legendgroup == model]
        assert len({t.line.color for t in mine}) == 1 and len({t.marker.symbol for t in mine}) == len(mine)
    assert len({t.line.color for t in fig.data}) == len(MODELS)
    assert not any("<b>" in str(c[0]) or "<b>" in t.name for t in fig.data for c in t.customdata)
    assert fig.layout.xaxis.type == "log" and fig.layout.xaxis.title.text == "Tokens measured"
    assert list(fig.layout.xaxis.tickvals) == sorted(set(table.tokens))  # a tick at each length measured


def test_entropy_chart_of_many_documents_names_models_only():
    many = figs.NAMED_DOCUMENTS + 1
    table = pd.DataFrame({"model": "enc", "source": [f"/x/{i}.txt" for i in range(many)],
                          "document": [f"{i}.txt" for i in range(many)], "tokens": np.arange(many) * 100 + 100,
                          "entropy": 0.5, "p10": 0.4, "p90": 0.6, "heads": 6})
    fig = figs.entropy_against_length(table)
    assert len(fig.data) == many and [t.showlegend for t in fig.data].count(True) == 1
    assert {t.name for t in fig.data} == {"enc"}
    assert list(fig.layout.xaxis.tickvals) != sorted(table.tokens)  # too many lengths for a tick each


def test_the_page_reads_what_the_sweep_writes(tmp_path):
    from explorer.sweep import sweep

    (tmp_path / "keys.txt").write_text("Keys open doors; doors open rooms; rooms hold keys. " * 6, encoding="utf-8")
    (tmp_path / "bad.txt").write_bytes(b"\xff\xfe not utf-8")
    sweep([tmp_path / "keys.txt", tmp_path / "bad.txt"], tmp_path / "out", models=["minilm"], layers=[1],
          heads=[0, 2], mechanisms=["lsh"], rows=32, engine="local", stream=io.StringIO())
    frame = corpus.read(tmp_path / "out")
    fine, failed = corpus.split(frame)
    assert len(failed) == 1 and failed.document.iloc[0] == "bad.txt"
    assert sorted(zip(fine.layer, fine["head"], fine.mechanism)) == [(1, 0, "dense"), (1, 0, "lsh"), (1, 2, "dense"),
                                                                     (1, 2, "lsh")]
    grid = corpus.sink_grid(frame, "minilm")
    assert (grid.layers, grid.heads) == ([1], [0, 2]) and (grid.documents == 1).all()
    assert set(corpus.compared(frame).shown) == {"LSH attention (Reformer)"}
