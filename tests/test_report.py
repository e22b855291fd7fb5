"""A saved HTML report opens offline in headless Chromium, draws every figure and shows user text as text."""
import pandas as pd
import pytest
import torch
from browser import chromium

from explorer.figures import common, lowrank, report

HOSTILE = '</pre><script>window.__ran = 1</script><b>bold?</b> & "quotes"'


def sections():
    tokens = [f"t{i}" for i in range(40)]
    values = torch.logspace(0, -3, 40)
    return [
        ("Spectrum", "Singular values <of> dense attention", lowrank.spectrum_chart(
            values, values.square().cumsum(0) / values.square().sum(), {0.9: 5, 0.99: 20}, chosen=8)),
        ("Map <b>", "", common.pooled_heatmap(torch.rand(8, 8), tokens, list(range(0, 41, 5)), list(range(0, 41, 5)),
                                              title="</script><script>window.__ran = 2</script>")),
        ("Along the text", "cap & caption",
         common.along_text({"dense": torch.rand(40), "lsh": torch.rand(40)}, tokens)),
        ("Table", "", pd.DataFrame({"mechanism": ["<i>LSH</i>"], "recall": [0.5]})),
        ("Pasted text", "", HOSTILE),
    ]


def test_report_embeds_plotly_once_and_escapes_text():
    page = report.html_report("Report <1>", sections())
    assert page.count("Plotly.newPlot") == 3 and page.count("* plotly.js v") == 1  # the library inline, once
    assert "<script src=" not in page
    assert "<title>Report &lt;1&gt;</title>" in page and "&lt;i&gt;LSH&lt;/i&gt;" in page
    assert HOSTILE not in page and "window.__ran = 1" in page  # there, but only as escaped text
    with pytest.raises(ValueError, match="plotly figure"):
        report.html_report("x", [("h", "", 3.0)])


def test_report_opens_offline_and_draws_every_figure(tmp_path):
    path = tmp_path / "report.html"
    path.write_text(report.html_report("Report <1>", sections()), encoding="utf-8")
    with chromium() as browser:
        context = browser.new_context(offline=True)
        page = context.new_page()
        asked = []
        page.on("request", lambda r: asked.append(r.url))
        page.goto(path.as_uri())
        page.wait_for_function("document.querySelectorAll('.js-plotly-plot .main-svg').length >= 3", timeout=30_000)
        drawn = page.evaluate("""() => [...document.querySelectorAll('.js-plotly-plot')]
                                    .filter(p => p.querySelector('.main-svg')).length""")
        assert drawn == 3
        assert page.locator(".js-plotly-plot g.hm image").count() == 1  # the heatmap's pixels are there
        assert page.evaluate("window.__ran") is None  # no user text ran as a script
        assert page.locator("pre.text").inner_text() == HOSTILE
        assert page.locator("h2").nth(1).inner_text() == "Map <b>"
        assert page.locator("td").first.inner_text() == "<i>LSH</i>"
        assert [u for u in asked if not u.startswith("file:")] == []
        context.close()
