"""AppTests of what strangers can send: links with bad or hostile settings, hosted mode's
model list and token cap, and a link that reopens a pasted text."""
import re

import pytest
from conftest import APP, SHORT_SAMPLE, TIMEOUT, encode_in_app, said
from streamlit.testing.v1 import AppTest

import explorer.core.encoding as encoding
from explorer.core.bundled import short_name


def opened(params: dict) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=TIMEOUT)
    at.query_params.update(params)
    return at.run()


@pytest.mark.parametrize("key, value, says", [
    ("grid", "0", "grid: is out of range"),
    ("grid", "1000000000", "grid: is out of range"),
    ("robust_range", '"yes"', "robust_range: must be true or false"),
    ("colour", '"rainbow"', "colour: must be one of auto, log, relative, linear"),
    ("p.lsh.n_buckets", '"abc"', "p.lsh.n_buckets: must be a whole number"),
    ("synth_margin", "NaN", "synth_margin: must be a finite number"),
    ("layer", "999", "layer: is out of range"),
    ("window", "1000000000", "window: is out of range"),
    ("source", '"Telepathy"', "source: must be one of"),
    ("model", '"' + "m" * 5000 + '"', "longer than 4,096 characters"),
])
def test_a_bad_setting_in_a_link_is_refused_and_named(key, value, says):
    at = opened({"source": '"Synthetic"', "run": "true", key: value})
    assert not at.exception
    assert says in said(at.warning)
    assert "encoded" not in at.session_state  # a view that cannot be reproduced as asked is not run


@pytest.mark.parametrize("key, value, says", [
    ("grid", "999999999", "grid: is out of range in [8, 1024]"),
    ("p.lsh.n_buckets", "abc", "p.lsh.n_buckets: must be a whole number"),
    ("synth_n", "1000000000", "synth_n: is out of range in [1, 200000]"),
    ("layer", "abc", "layer: must be a whole number (from 0 to the model's last layer)"),
])
def test_a_refused_link_value_is_named_and_leaves_the_url(key, value, says):
    at = opened({key: value})
    assert not at.exception
    assert says in said(at.warning)
    assert at.query_params.get(key) != value  # a copied link does not carry it on


def test_a_layer_the_model_lacks_is_refused_with_the_models_bounds():
    at = opened({"source": '"Sample"', "sample": f'"{SHORT_SAMPLE}"', "layer": "7", "run": "true"})
    assert not at.exception and not at.error
    assert "layer: layer 7 is out of range for this model's 6 layers (0-5)" in said(at.warning)
    assert at.session_state["layer"] == 0 and at.session_state["encoded"].layer == 0
    at.sidebar.number_input(key="layer").set_value(2).run()
    at.sidebar.button[0].click().run()
    at.sidebar.number_input(key="layer").set_value(9).run()
    at.sidebar.button[0].click().run()
    assert not at.exception and not at.error
    assert "layer 9 is out of range for this model's 6 layers (0-5)" in said(at.warning)
    assert at.session_state["layer"] == 2 and at.session_state["encoded"].layer == 2  # the previous layer kept


def test_hundreds_of_junk_keys_get_one_bounded_notice():
    at = opened({**{f"p.junk{i}.x": "1" for i in range(900)}, "zzz": "1"})  # Streamlit drops over 1,000
    assert not at.exception
    notice = said(at.warning)
    assert "Ignored settings this app does not have" in notice and len(notice) < 1200
    assert not [k for k in at.session_state if str(k).startswith("p.junk")]


def test_a_model_name_from_a_link_is_shown_as_text_not_markup():
    hostile = "[click me](https://evil.example/x) ![img](https://evil.example/p.png) <b>bold</b>"
    at = opened({"model": f'"{hostile}"', "source": '"Sample"', "run": "true"})
    assert not at.exception
    message = " ".join(e.value for e in at.warning)
    assert "is neither a bundled model" in said(at.warning)  # refused as the link is read, before any Run
    assert at.session_state["model"] == "minilm"
    assert "](" not in message and "<b>" not in message and "\\[click me\\]" in message


def test_page_settings_from_a_link_are_checked_by_the_pages_declaration():
    """Checked when the link is read if the page already declared them in this process, else
    kept until the page runs: either way refused values are named and good ones applied."""
    at = opened({"source": '"Synthetic"', "synth_n": "64",
                 "dilution_points": "99", "dilution_queries": "7", "dilution_nonsense": "1"})
    notice = said(at.warning)
    at.sidebar.button[0].click().run()
    assert not at.exception and "encoded" in at.session_state
    at.switch_page("views/dilution.py").run()
    assert not at.exception
    assert at.session_state["dilution_queries"] == 7
    notice += said(at.warning)
    assert "dilution_points: is out of range" in notice and "dilution_nonsense" in notice


@pytest.fixture
def hosted(monkeypatch):
    monkeypatch.setenv("EXPLORER_HOSTED", "1")
    monkeypatch.setenv("EXPLORER_MAX_TOKENS", "600")
    monkeypatch.delenv("EXPLORER_MODELS", raising=False)
    return monkeypatch


@pytest.mark.parametrize("name", ["/etc", "no-such-org/no-such-model", "../models/secret"])
def test_hosted_mode_refuses_any_model_off_its_list_without_reading_it(hosted, name):
    asked = []
    hosted.setattr(encoding, "_load", lambda *a: asked.append(a) or pytest.fail("nothing may be loaded"))
    at = opened({"model": f'"{name}"', "source": '"Sample"', "run": "true"})
    assert not at.exception
    assert "model: this demo offers only these models: minilm" in said(at.warning)
    assert at.sidebar.selectbox(key="model").options == [short_name("minilm")] and not asked


def test_hosted_mode_caps_tokens_and_offers_the_first_ones(hosted):
    at = AppTest.from_file(APP, default_timeout=TIMEOUT).run()
    at = encode_in_app(at, sample="Incident Report: Telemetry Loss at Kaldvik Fjord Marine Station")
    assert not at.exception and "encoded" not in at.session_state
    notice = said(at.sidebar.warning)
    count = int(re.search(r"This text has ([\d,]+) tokens", notice).group(1).replace(",", ""))
    assert count > 600 and "at most 600" in notice
    at.sidebar.button(key="use_first_tokens").click().run()
    assert not at.exception
    assert any("602 tokens" in c.value for c in at.sidebar.caption)  # 600 and the model's [CLS], [SEP]


def test_a_link_reopens_a_pasted_text_from_the_store(tmp_path, monkeypatch):
    monkeypatch.setenv("EXPLORER_TEXT_DIR", str(tmp_path))
    text = "A text pasted by hand, shared by a link: keys, doors and rooms."
    at = encode_in_app(AppTest.from_file(APP, default_timeout=TIMEOUT).run(), source="Paste", text=text)
    assert not at.exception
    link = {k: at.query_params[k][0] if isinstance(at.query_params[k], list) else at.query_params[k]
            for k in at.query_params}
    assert len(link["text"].strip('"')) == 32 and link["run"] == "true"
    other = opened(link)  # a fresh session, as another person opening the link
    assert not other.exception
    assert other.session_state["pasted"] == text and other.session_state["encoded"].text == text


def test_a_link_naming_only_its_sample_runs_it():
    """The source defaults to Sample, so a link that names a sample and run=true needs no source."""
    at = opened({"sample": '"The Notched Key"', "run": "true"})
    assert not at.exception and at.session_state["encoded"].text.startswith("# The Notched Key")
