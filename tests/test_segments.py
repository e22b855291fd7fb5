"""Segmentation: fixed length, validation of explicit starts, sentences and paragraphs from offsets."""
import re

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from explorer.core import segments


def words(text: str, special: bool = True):
    """A whitespace tokenizer with punctuation split off; [CLS]/[SEP]-like empty offsets around it."""
    spans = [(m.start(), m.end()) for m in re.finditer(r"\w+|[^\w\s]", text)]
    tokens = [text[a:b] for a, b in spans]
    if special:
        return ["[CLS]"] + tokens + ["[SEP]"], [(0, 0)] + spans + [(0, 0)]
    return tokens, spans


def starts_at(tokens, starts):
    return [tokens[i] for i in starts.tolist()]


TEXT = ("A first sentence here. Then e.g. a second one! Is it a third?\n\n"
        "\"Quoted end.\" Next starts.\n\nLast paragraph... with (trailing) words")


def test_sentences_from_offsets():
    tokens, offsets = words(TEXT)
    starts = segments.by_structure(TEXT, offsets, "sentences")
    assert starts_at(tokens, starts) == ["[CLS]", "Then", "Is", '"', "Next", "Last"]
    # the leading [CLS] stays in the first segment; the trailing [SEP] joins the last one
    assert segments.ids(starts, len(tokens))[-1] == len(starts) - 1


def test_paragraphs_from_offsets():
    tokens, offsets = words(TEXT)
    starts = segments.by_structure(TEXT, offsets, "paragraphs")
    assert starts_at(tokens, starts) == ["[CLS]", '"', "Last"]
    spans = segments.char_spans(starts, offsets)
    assert [TEXT[a:b] for a, b in spans] == [
        "A first sentence here. Then e.g. a second one! Is it a third?",
        '"Quoted end." Next starts.',
        "Last paragraph... with (trailing) words",
    ]


def test_paragraphs_fall_back_to_single_line_breaks():
    text = "line one\nline two\n  line three"
    tokens, offsets = words(text, special=False)
    assert starts_at(tokens, segments.by_structure(text, offsets, "paragraphs")) == ["line", "line", "line"]
    # with one blank line somewhere, single line breaks no longer count
    text = "line one\nline two\n\nline three"
    tokens, offsets = words(text, special=False)
    assert segments.by_structure(text, offsets, "paragraphs").tolist() == [0, 4]


def test_structure_edge_cases():
    assert segments.by_structure("no breaks at all", [(0, 2), (3, 9)], "sentences").tolist() == [0]
    assert segments.by_structure("", [(0, 0)], "sentences").tolist() == [0]
    with pytest.raises(ValueError, match="unit"):
        segments.by_structure("a. B", [(0, 1)], "chapters")
    with pytest.raises(ValueError, match="empty"):
        segments.by_structure("a", [], "sentences")


def test_fixed_and_helpers():
    starts = segments.fixed(10, 4)
    assert starts.tolist() == [0, 4, 8]
    assert segments.ends(starts, 10).tolist() == [4, 8, 10]
    assert segments.sizes(starts, 10).tolist() == [4, 4, 2]
    assert segments.ids(starts, 10).tolist() == [0, 0, 0, 0, 1, 1, 1, 1, 2, 2]
    assert segments.fixed(3, 50).tolist() == [0]
    assert segments.split_long(torch.tensor([0, 2, 9]), 12, 3).tolist() == [0, 2, 5, 8, 9]
    with pytest.raises(ValueError, match="length"):
        segments.fixed(5, 0)
    with pytest.raises(ValueError, match="max_length"):
        segments.split_long(starts, 10, 0)


@pytest.mark.parametrize("bad, match", [
    ([1, 3], "must start at 0"),
    ([0, 3, 3], "strictly increasing"),
    ([0, 5, 2], "strictly increasing"),
    ([0, 10], "out of range"),
    ([], "non-empty"),
    ([[0, 1]], "1-D"),
    ([0.0, 2.5], "integer"),
    ("abc", "boundaries"),
])
def test_check_rejects(bad, match):
    with pytest.raises(ValueError, match=match):
        segments.check(bad, 10)


@settings(max_examples=25, deadline=None)
@given(st.integers(1, 60), st.data())
def test_ids_sizes_pool_agree(n, data):
    chosen = data.draw(st.sets(st.integers(1, max(1, n - 1)), max_size=n - 1)) if n > 1 else set()
    starts = segments.check(sorted({0} | chosen), n)
    ids, sizes = segments.ids(starts, n), segments.sizes(starts, n)
    assert int(sizes.sum()) == n and bool((sizes > 0).all())
    assert torch.equal(torch.bincount(ids, minlength=len(starts)), sizes)
    x = torch.randn(2, n, 3, generator=torch.Generator().manual_seed(n))
    pooled = segments.pool_mean(x, starts)
    for s, (a, b) in enumerate(zip(starts.tolist(), segments.ends(starts, n).tolist())):
        assert torch.allclose(pooled[:, s], x[:, a:b].mean(1), atol=1e-6)


def test_by_mode():
    tokens, offsets = words(TEXT)
    n = len(tokens)
    assert segments.by_mode("fixed length", n, 7).tolist() == list(range(0, n, 7))
    paragraphs = segments.by_mode("paragraphs", n, 1000, TEXT, offsets, split=False)
    assert torch.equal(paragraphs, segments.by_structure(TEXT, offsets, "paragraphs"))
    capped = segments.by_mode("paragraphs", n, 5, TEXT, offsets)
    assert bool((segments.sizes(capped, n) <= 5).all()) and set(paragraphs.tolist()) <= set(capped.tolist())
    with pytest.raises(ValueError, match="mode"):
        segments.by_mode("words", n, 5, TEXT, offsets)
    with pytest.raises(ValueError, match="offsets"):
        segments.by_mode("sentences", n + 1, 5, TEXT, offsets)


def test_figures_place_boundaries_and_escape_text():
    from explorer.figures import common
    from explorer.figures import segments as figures

    tokens = ["<b>", "x", "y", "z", "w", "v"]
    fig = common.pooled_heatmap(torch.rand(3, 3), tokens, [0, 2, 4, 6], [0, 2, 4, 6])
    assert figures.add_boundaries(fig, [0, 3], [0, 2, 4, 6], [0, 2, 4, 6]) == 2
    vertical = [s for s in fig.layout.shapes if s.x0 == s.x1]
    assert [s.x0 for s in vertical] == [1.0]  # token 3 lies halfway through bin 1 (tokens 2-3)
    assert figures.add_boundaries(fig, [0, 1, 3, 5], [0, 2, 4, 6], [0, 2, 4, 6], max_lines=4) is None

    strip = figures.span_strips({"level 1": [0, 3], "document": [0]}, 6, tokens, points=3)
    assert len(strip.data[0].z) == 2 and "<b>" not in "".join(strip.data[0].text[0])
    bars = figures.per_segment(torch.arange(6.0), [0, 1, 2, 3, 4, 5], 6, tokens, points=2)
    assert list(bars.data[0].y) == [1.0, 4.0]  # two groups of three segments, token means

    text = "<b>x</b> y"
    html = figures.segmented_text(text, [(0, 3), (3, 4), (4, 8), (9, 10)], torch.tensor([0, 2]), 0, 4, focus=1)
    assert "&lt;b&gt;" in html and "<b>" not in html and html.count("border-left") == 1
