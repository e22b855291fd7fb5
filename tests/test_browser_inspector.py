"""Following a token in a real browser: every way of picking one (a table row, a curve point, the
search, a token clicked or a stretch selected in the text) moves the one followed token, on MiniLM and
on SmolLM2. What each click should pick is computed here from the model's own attention."""
import json
import urllib.parse

import pytest
import torch
from browser import MAIN, RUN_TIMEOUT, assert_no_exception, new_page, streamlit_server, wait_idle, wait_running

import explorer
from explorer.analysis.sinks import sink_layer
from explorer.core.attention import model_attention
from explorer.core.encoding import first_tokens, tokenize
from explorer.core.samples import load_sample

SAMPLE = "The Notched Key"
OPEN = {"source": '"Sample"', "sample": json.dumps(SAMPLE), "run": "true"}
FIXED = {**OPEN, "auto_head": "false", "layer": "0", "head": "0"}  # MiniLM, the layer and head as named
TEXT = '[data-testid="stMain"] .inspector-text'


@pytest.fixture(scope="module")
def base_url():
    with streamlit_server(env={"EXPLORER_WARM": "0"}) as server:  # no first-visit warm-up: these open links
        yield server.url


@pytest.fixture
def page():
    with new_page() as tab:
        errors = []
        tab.on("pageerror", lambda err: errors.append(str(err)))  # the shaded text's script among them
        yield tab
    assert not errors, f"JavaScript errors in the page: {errors}"


def opened(page, base_url: str, timeout: float = RUN_TIMEOUT, **settings) -> None:
    page.goto(f"{base_url}/?" + urllib.parse.urlencode(settings))
    wait_idle(page, timeout)
    assert_no_exception(page)
    page.locator(TEXT).wait_for(timeout=60_000)


def setting(page, key: str) -> str | None:
    return dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(page.url).query)).get(key)


def settled(page) -> None:
    """After a click: the run it started has ended, with nothing broken on the page."""
    wait_running(page)
    wait_idle(page)
    assert_no_exception(page)
    assert not page.get_by_text("Something went wrong").count()


def field(page) -> int:
    return int(page.locator('input[aria-label="Token"]').input_value())


@pytest.fixture(scope="module")
def minilm_layer0():
    return explorer.encode(load_sample(SAMPLE), layer=0)


def test_ticking_a_row_of_the_top_keys_follows_that_key(page, base_url, minilm_layer0):
    opened(page, base_url, **FIXED, query="100")
    expected = int(model_attention(minilm_layer0, torch.tensor([100]))[0, 0].argmax())
    table = page.locator(f"{MAIN} [data-testid='stDataFrame']").last
    table.scroll_into_view_if_needed()
    box = table.bounding_box()
    page.mouse.click(box["x"] + 20, box["y"] + 52)  # the first row's tick (a canvas: no cell in the DOM)
    settled(page)
    assert setting(page, "query") == str(expected) == str(field(page))
    page.mouse.click(box["x"] + 20, box["y"] + 52)  # again, on the new token's table: it keeps working
    settled(page)
    assert setting(page, "query") == str(field(page)) != str(expected)


def test_clicking_a_point_of_a_curve_follows_that_token(page, base_url):
    opened(page, base_url, **FIXED)
    chart = page.locator(f"{MAIN} .js-plotly-plot").nth(1)  # the entropy curve (the map comes first)
    chart.scroll_into_view_if_needed()
    point = chart.locator("g.scatterlayer .trace").last.locator("path.point").nth(300)
    near = page.evaluate("el => el.closest('.js-plotly-plot')._fullData.at(-1).x.slice(290, 311)",
                         point.element_handle())  # the tokens of the points under the mouse (plotly picks the nearest)
    box = point.bounding_box()
    page.mouse.click(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    settled(page)
    assert int(setting(page, "query")) == field(page) in near


def test_a_phrase_is_found_and_the_field_follows_each_match(page, base_url):
    opened(page, base_url, **FIXED)
    text = load_sample(SAMPLE)
    _, offsets = tokenize(text)
    places = [i for i in range(len(text)) if text.lower().startswith("the key", i)]
    expected = [1 + next(t for t, (a, b) in enumerate(offsets) if b > at) for at in places]  # [CLS] comes first
    search = page.get_by_label("Find in the text")
    search.fill("The   KEY")
    search.press("Enter")
    settled(page)
    assert setting(page, "query") == str(expected[0]) == str(field(page))
    assert page.get_by_text(f"Match 1 of {len(expected)}: tokens {expected[0]}–").is_visible()
    page.get_by_role("button", name="▶").click()
    settled(page)
    assert setting(page, "query") == str(expected[1]) == str(field(page))


def test_a_token_clicked_or_a_stretch_selected_in_the_text(page, base_url):
    opened(page, base_url, **FIXED, query="60")
    page.locator(f'{TEXT} [data-i="75"]').click()
    settled(page)
    assert setting(page, "query") == "75" == str(field(page))
    page.locator(f'{TEXT} [data-i="90"]').click(modifiers=["Shift"])  # from the followed token to this one
    settled(page)
    assert json.loads(setting(page, "selection")) == "75-90"
    assert page.get_by_text("16 tokens selected (tokens 75–90)").is_visible()
    a, b = (page.locator(f'{TEXT} [data-i="{i}"]').bounding_box() for i in (80, 84))
    page.mouse.move(a["x"] + 1, a["y"] + a["height"] / 2)  # select a stretch with the mouse
    page.mouse.down()
    page.mouse.move(b["x"] + b["width"] - 1, b["y"] + b["height"] / 2, steps=5)
    page.mouse.up()
    settled(page)
    assert json.loads(setting(page, "selection")) == "80-84" and setting(page, "query") == "80"
    page.get_by_text("who attends to it", exact=True).click()
    settled(page)
    assert page.get_by_text("Attention to token 80 from every query").is_visible()


@pytest.fixture(scope="module")
def smollm2(base_url):
    """One tab on SmolLM2 opened by a link without a layer: the app picks one."""
    with new_page() as tab:
        opened(tab, base_url, 3 * RUN_TIMEOUT, **OPEN, model='"smollm2"')  # loads the model: 13 s on a quiet CPU
        yield tab


def test_smollm2_opens_on_the_layer_where_its_sinks_form(smollm2):
    text = load_sample(SAMPLE)
    layer, head, _ = sink_layer(explorer.encode_layers(first_tokens(text, "smollm2", 512), "smollm2").docs)
    assert (setting(smollm2, "layer"), setting(smollm2, "head")) == (str(layer), str(head))
    assert smollm2.get_by_text(f"Opened on layer {layer}, head {head}, where this model's attention sinks").is_visible()
    assert smollm2.get_by_text("heads are attention sinks").count()


def test_every_token_that_holds_weight_is_visible_and_named_as_written(smollm2):
    spans = smollm2.locator(f"{TEXT} [data-i]")
    shown = spans.evaluate_all("""els => els.map(el => ({
        text: el.innerText, weight: parseFloat(el.title.split(' weight ').pop()), title: el.title}))""")
    top = max(s["weight"] for s in shown)
    weighty = [s for s in shown if s["weight"] >= 0.02 * top]
    assert any(not s["text"].replace("↵", "").replace("·", "").strip() for s in weighty)  # whitespace that holds weight
    assert all(s["text"].strip() for s in weighty), [s for s in weighty if not s["text"].strip()]
    assert not any(mark in s["title"] for s in shown for mark in "ĠĊ")  # no byte-level BPE marks
