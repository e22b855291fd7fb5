"""The encoded document every mechanism and page works on, the model's forward passes behind it,
and every layer's Doc of one text from one pass."""
from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

import torch

from explorer.core.rule import AttentionRule
from explorer.core.search import find, visible


@dataclass
class Passes:
    """The model's forward passes over a text, in the Doc's token indices.

    Pass w read `length` tokens: its own special tokens (`prefix` first, `suffix` last) around
    text tokens, where its position t is Doc token starts[w] + t. Doc token i was kept from pass
    owner[i], at position i - starts[owner[i]] there. `local_positions`: the model's positions
    restart in every pass (absolute position embeddings), so the Doc's q/k of tokens from
    different passes carry the window position they had, and tokens at one window position look
    alike across passes. q/k/v [passes, heads, length, head_dim] are each pass's own, as its
    attention used them (kv heads repeated for grouped-query attention, rotary at the tokens'
    places in the text), kept only when encode was asked to (keep_windows=True).
    """

    starts: torch.Tensor  # [passes] long
    owner: torch.Tensor  # [n] long
    length: int
    prefix: int
    suffix: int
    local_positions: bool
    q: torch.Tensor | None = None
    k: torch.Tensor | None = None
    v: torch.Tensor | None = None

    @property
    def count(self) -> int:
        return self.starts.numel()

    @property
    def local(self) -> torch.Tensor:
        """[n]: each Doc token's position in the pass it was kept from."""
        return torch.arange(self.owner.numel(), device=self.owner.device) - self.starts[self.owner]

    def columns(self) -> torch.Tensor:
        """[passes, length]: the Doc token each pass position stands for; a pass's own special
        tokens stand for the Doc's (its first on the Doc's first, its last on the Doc's last)."""
        t = torch.arange(self.length, device=self.starts.device)
        cols = self.starts[:, None] + t[None]
        n = self.owner.numel()
        cols[:, : self.prefix] = t[: self.prefix]
        cols[:, self.length - self.suffix :] = n - self.length + t[self.length - self.suffix :]
        return cols


@dataclass
class Doc:
    """Tokens of a text with the queries, keys and values of one layer.

    q, k, v are [heads, n, head_dim]; offsets are character spans in `text`
    ((0, 0) for special tokens the model adds). `causal` says whether the
    model's own attention is masked to the past. `passes`: how the model's
    forward passes covered the text (None for synthetic Docs). `rule`: how the
    model's layer attends (scale, mask, soft-cap, sinks), as its attention function
    received it; None for synthetic Docs, whose rule is the plain softmax.
    """

    text: str
    tokens: list[str]
    offsets: list[tuple[int, int]]
    q: torch.Tensor
    k: torch.Tensor
    v: torch.Tensor
    model: str = "synthetic"
    layer: int = 0
    causal: bool = False
    windows: list[tuple[int, int]] = field(default_factory=list)
    note: str = ""
    timings: dict[str, float] = field(default_factory=dict)
    needles: list[tuple[int, int]] = field(default_factory=list)
    passes: Passes | None = None  # how a model's forward passes covered the text (encode sets it)
    rule: AttentionRule | None = None  # how the model's layer attends (encode sets it)
    unknown: int = 0  # text tokens the tokenizer could not represent ([UNK]): the model saw nothing of them

    @property
    def model_rule(self) -> AttentionRule:
        """The rule the model attends by: the captured one, else the plain softmax."""
        return self.rule or AttentionRule.plain(self.head_dim, self.causal)

    @property
    def n(self) -> int:
        return self.q.shape[1]

    @property
    def heads(self) -> int:
        return self.q.shape[0]

    @property
    def head_dim(self) -> int:
        return self.q.shape[2]

    def head(self, h: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """q, k, v of one head, kept 3-D ([1, n, head_dim]) for mechanisms."""
        if not 0 <= h < self.heads:
            raise ValueError(f"head {h} is out of range 0..{self.heads - 1}")
        return self.q[h : h + 1], self.k[h : h + 1], self.v[h : h + 1]

    def unknown_note(self) -> str:
        """A warning when most of the text is unknown to the model ([UNK]: emoji, a script its vocabulary
        lacks), so its attention is over placeholders, not content; '' otherwise."""
        text = sum(b > a for a, b in self.offsets)
        if not text or self.unknown * 2 <= text:
            return ""
        return (f"{self.unknown:,} of this text's {text:,} tokens are unknown to the model's vocabulary ([UNK]): "
                "it saw placeholders, not the content, so its attention says little about this text; a model "
                "whose vocabulary covers it (e.g. smollm2, byte-level) reads every character.")

    def default_query(self) -> int:
        """The token an inspector opens on: one that carries content (a letter or a digit of the text),
        rather than [CLS] or the "#" of a title. A causal model's last such token sees the whole text
        (its first tokens see almost nothing); elsewhere the first one."""
        content = [i for i, (a, b) in enumerate(self.offsets) if any(c.isalnum() for c in self.text[a:b])]
        if not content:
            return self.n - 1 if self.causal else 0
        return content[-1] if self.causal else content[0]

    @cached_property
    def labels(self) -> list[str]:
        """Each token as the text it covers, whitespace made visible (· space, ↵ newline, → tab);
        a special token the model adds (no text) as the tokenizer names it. What a person reads
        wherever one token is named: byte-level BPE's "ĠLICENSE" is "·LICENSE", "Ċ" is "↵"."""
        return [visible(self.text[a:b]) if b > a else tok for tok, (a, b) in zip(self.tokens, self.offsets)]

    @cached_property
    def pieces(self) -> list[str]:
        """The text cut at token ends, whitespace made visible: each token's text with what stands
        between it and the token before, so pieces[a:b] joined read as that stretch was written
        (hover labels of pooled bins; WordPiece's spans leave the spaces out, so labels cannot)."""
        out, cursor = [], 0
        for tok, (a, b) in zip(self.tokens, self.offsets):
            if b <= a:
                out.append(tok)
                continue
            out.append(visible(self.text[cursor if cursor <= a else a : b]))  # overlapping spans: its own
            cursor = max(cursor, b)
        return out

    def find(self, query: str) -> list[tuple[int, int]]:
        """Token ranges [start, stop) of every place `query` names in the text: a phrase (case
        folded), "line:N" or "char:N" (explorer.core.search.find)."""
        return find(self.text, self.offsets, query)


@dataclass
class ModelCapture:
    """Every captured layer's Doc of one text, from one windowed pass (encoding.encode_layers).

    All layers come out of that pass together, so they are held together: about layers x one
    Doc (MiniLM: 27.6 KB a token in float32). Kept whole (e.g. in the app's cache), a layer
    chosen anywhere is a lookup, not another encoding.
    """

    docs: list[Doc]

    @property
    def layers(self) -> list[int]:
        return [d.layer for d in self.docs]

    def doc(self, layer: int) -> Doc:
        """The Doc of `layer`, equal to encode(text, model, layer=layer) with the same windows."""
        for d in self.docs:
            if d.layer == layer:
                return d
        raise ValueError(f"layer {layer!r} was not captured; captured: {self.layers}")
