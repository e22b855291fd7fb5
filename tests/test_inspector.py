"""What the token inspector computes: places found in the text, tokens named by the text they
cover, several tokens read together, who attends to a token, and where a causal LM's sinks form."""
import re

import numpy as np
import pytest
import torch

import explorer
from explorer.analysis.sinks import THRESHOLD, sink_layer
from explorer.core.attention import model_attention, summed_rows
from explorer.core.bias import ALiBi, RelativeBuckets
from explorer.core.doc import Doc
from explorer.core.encoding import load_model, tokenize
from explorer.core.rule import AttentionRule
from explorer.core.search import MAX_MATCHES, find, visible
from explorer.core.stats import attention_stats

TEXT = ("Copyright (C) 2007 Free Software Foundation.\n\n  The \"Corresponding Source\" for a work means all\n"
        "the source code needed to generate, install, and run the object code.  Corresponding\tSource "
        "includes interface definition files.\n")


def _doc(text: str, model: str) -> Doc:
    """A Doc of the model's real tokens and offsets (no forward pass: the search needs none)."""
    ids, offsets = tokenize(text, model)
    zeros = torch.zeros(1, len(ids), 2)
    tokens = load_model(model).tokenizer.convert_ids_to_tokens(ids)
    return Doc(text=text, tokens=tokens, offsets=offsets, q=zeros, k=zeros, v=zeros)


@pytest.mark.parametrize("model", ["minilm", "smollm2"])
def test_a_phrase_is_found_wherever_it_occurs_across_token_boundaries(model):
    doc = _doc(TEXT, model)
    found = doc.find("corresponding   SOURCE")  # case and the run of spaces do not matter
    starts = [m.start() for m in re.finditer(r"corresponding\s+source", TEXT, re.IGNORECASE)]  # brute force
    assert len(found) == len(starts) == 2
    for (a, b), start in zip(found, starts):
        end = start + len(re.match(r"corresponding\s+source", TEXT[start:], re.IGNORECASE).group(0))
        covered = [i for i, (x, y) in enumerate(doc.offsets) if x < end and y > start]  # every token it touches
        assert list(range(a, b)) == covered
    assert doc.find("no such phrase") == [] and doc.find("   ") == []


def test_a_line_and_a_character_offset_name_their_tokens():
    doc = _doc(TEXT, "minilm")
    line = TEXT.split("\n")[3]  # line:4, counted from 1
    (a, b), = doc.find("line:4")
    assert doc.text[doc.offsets[a][0] : doc.offsets[b - 1][1]] == line.strip()
    char = TEXT.index("Foundation") + 3
    (a, b), = doc.find("char:%d" % char)
    assert b == a + 1 and doc.offsets[a][0] <= char < doc.offsets[a][1]
    space = TEXT.index(" 2007")  # a character between tokens names the next token
    assert doc.find(f"char:{space}") == [(a := doc.find("2007")[0][0], a + 1)]
    assert doc.find("line:999") == [] and doc.find(f"char:{len(TEXT)}") == []


def test_a_search_stops_at_its_cap():
    text = "a " * (MAX_MATCHES + 50)
    offsets = [(i, i + 1) for i in range(0, len(text), 2)]
    assert len(find(text, offsets, "a")) == MAX_MATCHES


@pytest.mark.parametrize("model", ["minilm", "smollm2"])
def test_tokens_are_named_by_the_text_they_cover_with_whitespace_made_visible(model):
    text = "                   LICENSE\nThe  quick\tfox"
    doc = _doc(text, model)
    for label, (a, b) in zip(doc.labels, doc.offsets):
        assert label == visible(text[a:b]) and not re.search(r"[ĠĊ\s]", label)  # no byte-level BPE marks
    assert "".join(doc.pieces) == visible(text)  # pieces joined read as written
    if model == "smollm2":  # byte-level BPE keeps whitespace as tokens: 19 spaces read as 19 dots
        assert any(label == "·" * len(label) and len(label) > 1 for label in doc.labels)
        assert "↵" in doc.labels


RULES = {
    "bidirectional": AttentionRule(0.3, False),
    "causal": AttentionRule(0.25, True),
    "sliding window": AttentionRule(0.25, True, window=7),
    "soft-capped, local": AttentionRule(0.4, False, window=5, softcap=2.0),
    "sinks": AttentionRule(0.25, True, sinks=(0.5, -1.0, 2.0)),
    "ALiBi": AttentionRule(0.25, True, bias=ALiBi((0.5, 0.25, 0.125))),
    "learned buckets": AttentionRule(0.25, False, bias=RelativeBuckets(
        tuple(tuple(float(x) for x in torch.linspace(-1, 1, 32) * h) for h in (1, 2, 3)), 16, True)),
}


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("name", list(RULES))
def test_who_attends_to_a_key_is_its_column_of_the_models_attention(name, dtype):
    """The column from the statistics pass's log-sum-exp equals the column of the full weights."""
    rule = RULES[name]
    g = torch.Generator().manual_seed(1)
    q, k, v = (torch.randn(3, 61, 16, generator=g, dtype=dtype) for _ in range(3))
    lse = attention_stats(q, k, v, rule=rule, grid=16).lse
    full = rule.weights(q, k, torch.arange(61))  # [heads, n, n]: the brute force
    for key in (0, 13, 60):
        column = rule.column(q, k, key, lse)
        torch.testing.assert_close(column, full[:, :, key], rtol=1e-4 if dtype == torch.float32 else 1e-10,
                                   atol=1e-6 if dtype == torch.float32 else 1e-12)
        if rule.causal:
            assert not column[:, :key].any()  # no query before the key sees it


def test_several_tokens_read_together_sum_their_rows():
    doc = explorer.synthetic(300, heads=2, head_dim=8, seed=3)
    rows = torch.tensor([5, 6, 7, 120, 299])
    weights = model_attention(doc, torch.arange(doc.n))  # every row, to sum by hand
    torch.testing.assert_close(summed_rows(lambda r: model_attention(doc, r), rows, chunk=2),
                               weights[:, rows].sum(1))


def test_a_causal_lm_opens_where_its_sinks_form():
    """SmolLM2 (real weights): the layer sink_layer names has the most heads over Gu et al.'s threshold,
    each head's score measured here from the model's own attention rows."""
    capture = explorer.encode_layers(TEXT * 3, "smollm2")
    layer, head, why = sink_layer(capture.docs)
    first = np.array([model_attention(d, torch.arange(d.n))[:, :, 0].mean(1).numpy() for d in capture.docs])
    counts = (first > THRESHOLD).sum(1)
    assert counts[layer] == counts.max() > 0
    assert head == first[layer].argmax()
    assert f"{counts[layer]} of its 9 heads" in why
