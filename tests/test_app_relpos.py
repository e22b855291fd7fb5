"""AppTest of the relative-position page: every kind on a short sample, a pasted text, a tiny text."""
import pytest
import conftest
from conftest import APP, SHORT_SAMPLE, TIMEOUT, encode_in_app
from streamlit.testing.v1 import AppTest

PAGE = "views/relpos.py"


@pytest.fixture
def page_app():
    return AppTest.from_file(APP, default_timeout=TIMEOUT).run()


def open_page(at):
    at.switch_page(PAGE).run()
    assert not at.exception, at.exception
    return at


def chart_keys(at):
    return {c.proto.id for c in at.get("plotly_chart")}


PARAGRAPH = ("The keeper counted the lamps along the harbour wall, and each night one more was dark. "
             "Nobody asked why the ships came in later, or why the bell rang twice. ") * 8


def test_sample_draws_every_panel(page_app):
    at = open_page(encode_in_app(page_app, sample=SHORT_SAMPLE))
    assert at.title[0].value == "Relative position"
    # bias curve, bias map, dense and biased maps, attention by distance, fidelity along the text
    assert len(at.get("plotly_chart")) >= 6
    assert len(at.dataframe) == 1  # fidelity summary
    assert at.metric[0].value != "—"
    assert not at.error


def test_every_kind_draws_its_charts(page_app):
    at = open_page(encode_in_app(page_app, source="Paste", text=PARAGRAPH))
    for kind in ("t5", "mpnet", "alibi", "shaw", "rope"):
        at.selectbox(key="p.relpos.kind").set_value(kind).run()
        assert not at.exception, (kind, at.exception)
        assert len(at.get("plotly_chart")) >= (7 if kind == "rope" else 6), kind  # RoPE adds its decay chart
        assert not at.error
    at.selectbox(key="p.relpos.kind").set_value("alibi").run()  # rope hides scale; alibi shows it again
    at.number_input(key="p.relpos.scale").set_value(0.0).run()
    assert not at.exception and not at.error


def test_learned_mpnet_draws_the_table_it_ships(page_app):
    """'learned: MPNet': each head's curve is the shipped table at the bucket of each distance (head h is
    MPNet's head h mod 12), the caption names the model and its licence."""
    import numpy as np
    import torch

    from explorer.mechanisms import relpos

    at = open_page(encode_in_app(page_app, source="Paste", text=PARAGRAPH))
    at.selectbox(key="p.relpos.kind").set_value("mpnet").run()
    assert not at.exception and not at.error
    fig = next(conftest.figure(c) for c in at.get("plotly_chart")
               if (conftest.figure(c)["layout"].get("title") or {}).get("text") == "Bias against distance")
    table = relpos.learned_table()
    for trace in fig["data"]:
        head = int(trace["name"].split()[-1])
        distances = torch.as_tensor(conftest.values(trace["x"]).astype(np.int64))
        buckets = relpos.t5_bucket(distances, True, 32, 128)
        np.testing.assert_allclose(conftest.values(trace["y"]), table.values[buckets, head % 12].numpy(), rtol=1e-6)
        np.testing.assert_array_equal(conftest.values(trace["customdata"]), buckets.numpy())
    assert "all-mpnet-base-v2" in conftest.said(at.caption) and "Apache-2.0" in conftest.said(at.caption)


def test_t5_profile_buckets_and_a_bad_checkpoint(page_app):
    at = open_page(encode_in_app(page_app, source="Paste", text=PARAGRAPH))
    at.selectbox(key="p.relpos.profile").set_value("local").run()
    at.number_input(key="p.relpos.num_buckets").set_value(8).run()
    assert not at.exception and not at.error
    at.number_input(key="p.relpos.max_distance").set_value(2).run()  # not above the 2 exact buckets: an error
    assert not at.exception
    assert "max_distance=2" in conftest.said(at.error)
    at.number_input(key="p.relpos.max_distance").set_value(128).run()
    for name in ("/no/such/t5/checkpoint", "../../etc/passwd"):  # the second: a file, or no such folder
        at.text_input(key="relpos_t5").input(name).run()
        assert not at.exception
        said = conftest.said(at.error)
        assert f"could not load T5 checkpoint '{name}'" in said
        assert "Change “T5 checkpoint for the bucket values (optional)”" in said  # the field to change
        assert "repo_type" not in said and "repo_id" not in said  # not the hub library's arguments


def test_tiny_pasted_text_and_causal_alibi(page_app):
    at = open_page(encode_in_app(page_app, source="Paste", text="Short <i>text</i>."))
    at.selectbox(key="p.relpos.kind").set_value("alibi").run()
    at.checkbox(key="p.relpos.causal").check().run()
    assert not at.exception and not at.error
    assert len(at.get("plotly_chart")) >= 6


def test_t5_checkpoint_values_drive_the_bias(page_app, tmp_path):
    from transformers import T5Config, T5Model

    config = T5Config(vocab_size=16, d_model=8, d_kv=4, d_ff=16, num_layers=1, num_heads=2,
                      relative_attention_num_buckets=12, relative_attention_max_distance=30)
    T5Model(config).save_pretrained(tmp_path)
    at = open_page(encode_in_app(page_app, source="Paste", text="A few words to bias by distance, no more."))
    at.sidebar.number_input(key="head").set_value(1).run()  # the checkpoint has heads 0 and 1
    at.text_input(key="relpos_t5").input(str(tmp_path)).run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    assert any("12 buckets, max distance 30, 2 heads" in c.value for c in at.caption)
    at.sidebar.number_input(key="head").set_value(5).run()  # the checkpoint has no head 5: said, not raised
    assert not at.exception
    assert "t5_values" in conftest.said(at.error)


def test_a_head_other_than_the_first_gets_its_own_bias(page_app):
    at = open_page(encode_in_app(page_app, source="Paste", text="A short text about keys and doors. " * 5))
    at.selectbox(key="p.relpos.kind").set_value("alibi").run()
    at.sidebar.number_input(key="head").set_value(3).run()
    assert not at.exception, at.exception
    assert not at.error, [e.value for e in at.error]
