"""Pictures out: real PNG and SVG exports through kaleido and the machine's Chromium (offline)."""
import re
import struct
import xml.etree.ElementTree as ET

import plotly.io as pio
import pytest
import torch
from streamlit.elements.lib.streamlit_plotly_theme import configure_streamlit_plotly_theme

from explorer.figures import export, lowrank, relpos

SVG = "{http://www.w3.org/2000/svg}"


def spectrum():
    values = torch.logspace(0, -4, 200)
    return lowrank.spectrum_chart(values, values.square().cumsum(0) / values.square().sum(), {0.9: 12, 0.99: 80},
                                  chosen=32, title="Spectrum <of> head 3")


def png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


def test_png_at_publication_size():
    assert export.unavailable() is None  # kaleido==1.5.0 (requirements.txt) and Debian's chromium (.ci/run)
    fig = spectrum()
    assert png_size(export.to_png(fig)) == (export.WIDTH * export.SCALE, export.HEIGHT * export.SCALE)
    assert png_size(export.to_png(fig, width=640, height=400, scale=1)) == (640, 400)
    assert fig.layout.font.size is None  # the page's figure is left as it was


def test_svg_parses_and_keeps_its_text():
    svg = export.to_svg(spectrum(), width=900, height=500)
    root = ET.fromstring(svg)
    assert root.tag == f"{SVG}svg" and root.get("width") == "900"
    words = " ".join("".join(t.itertext()) for t in root.iter(f"{SVG}text"))
    assert "Spectrum <of> head 3" in words and "cumulative energy" in words and "90% at k = 12" in words
    export.close()  # frees the browser; the next export opens another
    assert ET.fromstring(export.to_svg(spectrum(), width=300, height=200)).get("height") == "200"


@pytest.mark.parametrize("template", ["plotly", "streamlit"])  # the app builds its figures under Streamlit's
def test_rendered_legend_sits_below_the_x_axis_title(template, monkeypatch):
    monkeypatch.setattr(pio.templates, "default", pio.templates.default)  # put back after the test
    configure_streamlit_plotly_theme()  # registers the "streamlit" template (and makes it the default)
    pio.templates.default = template
    d = torch.arange(-300, 301)
    fig = relpos.bias_by_distance(d, -torch.log1p(d.abs().float()).repeat(12, 1), highlight=3)
    svg = export.to_svg(fig, width=500, height=360, font_size=None).decode()  # narrow: the legend wraps
    legend_top = float(re.search(r'<g class="legend"[^>]*translate\([\d.]+,([\d.]+)\)', svg).group(1))
    title = re.search(r'<g class="g-xtitle"(?: transform="translate\([\d.-]+,([\d.-]+)\)")?>'
                      r'<text class="xtitle"[^>]*\by="([\d.]+)"', svg)
    title_baseline = float(title.group(2)) + float(title.group(1) or 0)  # plotly shifts the title's group
    assert legend_top > title_baseline


def test_bad_sizes_and_a_missing_exporter_say_why(monkeypatch):
    with pytest.raises(ValueError, match="width"):
        export.to_png(spectrum(), width=0)
    monkeypatch.setattr(export, "unavailable", lambda: "static export needs the kaleido package")
    with pytest.raises(RuntimeError, match="needs the kaleido package"):
        export.to_svg(spectrum())
