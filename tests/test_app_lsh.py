"""AppTest of the LSH page: a short sample, a pasted text with markup, parameter errors, the re-hash."""
import conftest
from conftest import KEEPER, open_page, open_sample

PAGE = "views/lsh.py"


def test_sample_draws_every_chart(app):
    at = open_sample(app, PAGE, "LSH attention (Reformer)")
    charts = at.get("plotly_chart")
    # strips, two maps, sizes per bucket, size histogram, sorted matrix, pairs, by rank, fidelity along the text
    assert len(charts) == 9
    assert len(at.dataframe) >= 1  # fidelity summary
    assert any("caught" in c.value for c in at.caption)


PARAGRAPH = KEEPER * 6


def test_rehash_shared_qk_and_a_bad_bucket_count(app):
    at = open_page(app, PAGE, source="Paste", text=PARAGRAPH)
    assert not at.exception
    at.number_input(key="lsh_seeds").set_value(3).run()
    at.button(key="lsh_rehash").click().run()
    assert not at.exception
    assert any("over 3 seeds" in c.value for c in at.caption)
    at.checkbox(key="p.lsh.shared_qk").check().run()
    assert not at.exception
    assert not any("over 3 seeds" in c.value for c in at.caption)  # stale: made with other parameters
    at.button(key="lsh_rehash").click().run()
    assert any("over 3 seeds" in c.value for c in at.caption)
    at.number_input(key="p.lsh.n_rounds").set_value(1).run()
    assert not at.exception
    at.number_input(key="p.lsh.n_buckets").set_value(5).run()
    assert not at.exception
    assert "n_buckets=5 must be even" in conftest.said(at.error)


def test_short_pasted_text(app):
    at = open_page(app, PAGE, source="Paste", text="Tiny <b>text</b>.")
    assert not at.exception
    conftest.dense_map_is_exact(at)
