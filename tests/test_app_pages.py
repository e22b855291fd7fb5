"""Every page on the smallest inputs: a one-word text (three tokens with [CLS] and [SEP]),
a one-token synthetic document, and no document at all. None may raise."""
import pytest
from conftest import open_page

PAGES = ["views/overview.py", "views/model.py", "views/compare.py", "views/dilution.py", "views/lsh.py", "views/lowrank.py",
         "views/segmented.py", "views/hierarchical.py", "views/memory.py", "views/routing.py", "views/relpos.py",
         "views/inside.py", "views/needle.py"]


@pytest.mark.parametrize("page", PAGES)
def test_page_without_a_document_asks_for_one(app, page):
    at = app.switch_page(page).run()
    assert not at.exception
    assert any("press **Run**" in i.value for i in at.info)


@pytest.mark.parametrize("page", PAGES)
def test_page_on_a_one_word_text(app, page):
    at = open_page(app, page, source="Paste", text="Hi")
    assert not at.exception, at.exception
    assert not at.error, [e.value for e in at.error]


@pytest.mark.parametrize("page", PAGES)
def test_page_on_a_one_token_synthetic_document(app, page):
    at = app
    at.sidebar.radio(key="source").set_value("Synthetic").run()
    at.sidebar.number_input(key="synth_n").set_value(1).run()
    at.sidebar.button[0].click().run()
    at.switch_page(page).run()
    assert not at.exception, at.exception
    assert not at.error, [e.value for e in at.error]


@pytest.mark.parametrize("page", PAGES)
def test_page_on_a_later_head_and_layer(app, page):
    at = app
    at.sidebar.number_input(key="layer").set_value(4).run()
    at = open_page(at, page, source="Paste", text="Keys open doors; doors open rooms; rooms hold keys. " * 8)
    at.sidebar.number_input(key="head").set_value(11).run()
    assert not at.exception, at.exception
    assert not at.error, [e.value for e in at.error]
