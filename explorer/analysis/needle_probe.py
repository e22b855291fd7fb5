"""Does the model still find a fact, and which of its heads find it: a needle in a haystack, asked
back, teacher-forced (Liu et al., "Lost in the Middle", TACL 2024; Wu et al., "Retrieval Head
Mechanistically Explains Long-Context Factuality", ICLR 2025).

A fact goes into a text (the haystack) at the sentence boundary nearest each relative position,
the text is cut so that the whole prompt fits `max_tokens`, a question follows, and the model reads
the prompt with the answer after it (the tokenizer's own join of the two). One forward pass per
position, through explorer.core.forward, gives:
  - the probability of the whole answer, teacher-forced: the product of each answer token's
    probability given everything before it, and the rank of its first token;
  - per head, Wu et al.'s retrieval score: of the answer's tokens, the share whose predicting query
    (the row before the token, as in decoding) attends most to that same token inside the fact, a
    copy from context; and the attention mass those queries put on the fact.
The same pass with a mechanism swapped into the listed layers (explorer.analysis.in_model's
mechanism_attention: the two share one implementation), or with heads switched off (`ablate`),
measures what they lose.
"""
from __future__ import annotations

import math
import re
import time
from dataclasses import dataclass, field, replace

import numpy as np
import pandas as pd
import torch

from explorer.analysis.in_model import WHOLE_TEXT, check_mechanism, load_causal, mechanism_attention
from explorer.core import forward
from explorer.core.encoding import LoadedModel, _check_layers, _check_text, _tokenize
from explorer.core.samples import load_sample
from explorer.mechanisms import DENSE, REGISTRY

FACT = "The secret code of the archive is 7391."
QUESTION = "Question: What is the secret code of the archive?\nAnswer: The secret code of the archive is"
ANSWER = " 7391"
HAYSTACK = "A Field Guide to Reading Long Documents"  # the bundled text the defaults are measured on
POSITIONS = tuple(i / 10 for i in range(11))
SEPARATOR = "\n\n"  # between the haystack and the question
RETRIEVAL_PASS = 0.1  # a head whose retrieval score passes this retrieves (Wu et al. use 0.1)
# where a sentence ends and the next begins: after . ! ? (and closing quotes or brackets) and a space, or a line break
_BOUNDARY = re.compile(r"[.!?][\"')\]*_]*[ \t]+|\n+")


@dataclass(frozen=True)
class Prompt:
    """One prompt as the model reads it: the haystack with the fact, the question, the answer."""

    text: str  # all of it, answer included: what the Dense attention page opens
    ids: list[int] = field(repr=False)  # as they enter the model (its prefix first)
    fact: tuple[int, int]  # the fact's tokens [start, stop) in ids
    answer: tuple[int, int]  # the answer's tokens [start, stop) in ids

    @property
    def rows(self) -> torch.Tensor:
        """The query rows that predict the answer's tokens (each the row before its token)."""
        return torch.arange(self.answer[0] - 1, self.answer[1] - 1)


@dataclass
class NeedleProbe:
    """Per relative position of the fact: whether the model finds the answer, and which heads copy it.
    Arrays are over positions first ([P], [P, layers, heads])."""

    model: str
    mechanism: str | None  # None: the model's own attention
    params: dict
    layers: tuple[int, ...]  # where the mechanism runs (every layer without one)
    ablate: tuple[tuple[int, int], ...]  # (layer, head) switched off
    positions: np.ndarray  # relative positions asked, 0 (the text's start) .. 1 (just before the question)
    token_positions: np.ndarray  # where each fact starts (its first token, in the prompt's ids)
    tokens: np.ndarray  # each prompt's length in tokens, answer included
    answer_prob: np.ndarray  # teacher-forced probability of the whole answer
    answer_rank: np.ndarray  # rank of the answer's first token among the vocabulary (1: the most likely)
    retrieval: np.ndarray  # [P, layers, heads] Wu et al.'s retrieval score
    fact_mass: np.ndarray  # [P, layers, heads] attention the answer's queries put on the fact
    text_tokens: int  # tokens of the text used as the haystack
    total_tokens: int  # the text's tokens in all
    window_start: int | None  # first key of the window the answer's first query sees, if the mechanism has one
    prefix: int  # the model's special tokens before the text (a BOS)
    prompts: list[Prompt] = field(repr=False)
    seconds: float = 0.0

    @property
    def window_edge(self) -> float | None:
        """The relative position from which the fact lies inside the mechanism's window (the haystack's
        tokens before the window's first key, as a share of its tokens), or None."""
        if self.window_start is None:
            return None
        return float(np.clip((self.window_start - self.prefix) / self.text_tokens, 0, 1))

    def note(self) -> str:
        """How much of the text the haystack used, in words."""
        if self.text_tokens >= self.total_tokens:
            return f"the whole text ({self.total_tokens:,} tokens) as the haystack"
        return f"the first {self.text_tokens:,} of the text's {self.total_tokens:,} tokens as the haystack"

    def heads(self) -> pd.DataFrame:
        """One line per (layer, head): retrieval score and fact mass, each the mean over positions."""
        layers, heads = self.retrieval.shape[1:]
        grid = np.indices((layers, heads)).reshape(2, -1)
        return pd.DataFrame({"layer": grid[0], "head": grid[1],
                             "retrieval": self.retrieval.mean(0).reshape(-1),
                             "fact_mass": self.fact_mass.mean(0).reshape(-1)})

    def top_heads(self, k: int = 10) -> list[tuple[int, int]]:
        """The k heads with the highest retrieval score (mean over positions), ties by fact mass."""
        frame = self.heads().sort_values(["retrieval", "fact_mass"], ascending=False, kind="stable")
        return [(int(a), int(b)) for a, b in zip(frame.layer[:k], frame["head"][:k])]

    def frame(self) -> pd.DataFrame:
        """One line per position: where the fact went and whether the answer was found."""
        return pd.DataFrame({"position": self.positions, "token_position": self.token_positions,
                             "tokens": self.tokens, "answer_prob": self.answer_prob,
                             "answer_rank": self.answer_rank})

    @staticmethod
    def merge(*probes: NeedleProbe) -> NeedleProbe:
        """Probes of the same setup at different positions as one, in the order given."""
        first = probes[0]
        cat = {name: np.concatenate([getattr(p, name) for p in probes])
               for name in ("positions", "token_positions", "tokens", "answer_prob", "answer_rank", "retrieval",
                            "fact_mass")}
        return replace(first, **cat, prompts=[x for p in probes for x in p.prompts],
                       seconds=sum(p.seconds for p in probes))


# ---------------------------------------------------------------- the prompts

def boundaries(text: str) -> list[int]:
    """Character indices where a sentence starts: 0, after each sentence's end, and the text's end."""
    return sorted({0, *(m.end() for m in _BOUNDARY.finditer(text) if m.end() < len(text)), len(text)})


def plant(hay: str, fact: str, at: int) -> tuple[str, int]:
    """The haystack with the fact as a sentence of its own at boundary `at`, and where the fact starts;
    the fact is followed by the whitespace that stood before it (a paragraph stays a paragraph)."""
    if at == 0:  # a paragraph of its own before the text, or after it
        return fact + SEPARATOR + hay, 0
    if at >= len(hay):
        return hay + SEPARATOR + fact, len(hay) + len(SEPARATOR)
    before = hay[:at]
    space = before[len(before.rstrip()):] or " "
    return before + fact + space + hay[at:], at


def check_parts(fact, question, answer, positions) -> np.ndarray:
    """The positions as an array, once the fact, question and answer say something and every position
    lies in [0, 1]; else ValueError in words."""
    for name, value in (("fact", fact), ("question", question), ("answer", answer)):
        if not isinstance(value, str) or not value.strip():
            raise ValueError(f"the {name} is empty: write the {name} the probe plants and asks about")
    try:
        where = np.asarray(positions, dtype=float).reshape(-1)
    except (TypeError, ValueError) as err:
        raise ValueError(f"positions={positions!r} must be numbers between 0 and 1") from err
    if not where.size:
        raise ValueError("positions is empty: give at least one relative position between 0 and 1")
    if not np.isfinite(where).all() or (where < 0).any() or (where > 1).any():
        raise ValueError(f"positions must lie between 0 (the text's start) and 1 (its end, just before the "
                         f"question); got {', '.join(f'{p:g}' for p in where)}")
    return where


def _prompt(lm: LoadedModel, hay: str, offsets: list, fact: str, question: str, answer: str,
            position: float) -> Prompt:
    """The prompt with the fact at the boundary nearest `position`, tokenized as one text with its answer."""
    count = len(offsets)
    target = len(hay) if position >= 1 or not count else offsets[min(count - 1, round(position * count))][0]
    at = min(boundaries(hay), key=lambda b: (abs(b - target), b))
    body, start = plant(hay, fact, at)
    prompt = body + SEPARATOR + question
    text = prompt + answer
    ids, spans = _tokenize(lm, text)
    p = len(lm.prefix)
    inside = [i for i, (a, b) in enumerate(spans) if b > start and a < start + len(fact)]
    said = [i for i, (a, b) in enumerate(spans) if b > len(prompt)]
    if not said or spans[said[0]][0] < len(prompt) or text[len(prompt):spans[said[0]][0]].strip():
        cut = spans[said[0]] if said else (len(prompt), len(prompt))
        raise ValueError(f"the answer {answer!r} does not begin a token of its own after the question: the "
                         f"tokenizer joins {text[cut[0]:cut[1]]!r} across the two, so the answer cannot be read "
                         "as the question's continuation. End the question where a word ends and start the answer "
                         "with its space (' 7391', not '7391' after 'is')")
    return Prompt(text, lm.prefix + ids, (p + inside[0], p + inside[-1] + 1), (p + said[0], p + len(ids)))


def prompts(lm: LoadedModel, text: str, fact: str, question: str, answer: str, positions: np.ndarray,
            max_tokens: int) -> tuple[list[Prompt], int, int]:
    """Each position's prompt, all of them within max_tokens, the haystack the same for every one:
    (prompts, haystack tokens, the text's tokens). The haystack is the text's first tokens, cut back to
    a sentence's end when one lies in its second half."""
    ids, offsets = _tokenize(lm, text)
    fixed = len(lm.prefix) + len(_tokenize(lm, fact + " " + SEPARATOR + question + answer)[0])
    budget = max_tokens - fixed - 2  # two tokens of slack for the joins; trimmed further below if needed
    if budget < 1:
        raise ValueError(f"the fact, question and answer take {fixed:,} tokens: with max_tokens={max_tokens:,} "
                         "no room is left for the text they hide in. Shorten them or raise max_tokens")
    while True:
        hay = text if len(ids) <= budget else text[: offsets[budget - 1][1]]
        ends = [b for b in boundaries(hay) if b > len(hay) // 2]
        hay = (hay[: ends[-2]] if len(hay) < len(text) and len(ends) > 1 else hay).rstrip()
        hay_offsets = [o for o in offsets if o[1] <= len(hay)]
        made = [_prompt(lm, hay, hay_offsets, fact, question, answer, float(p)) for p in positions]
        over = max(len(m.ids) for m in made) - max_tokens
        if over <= 0:
            return made, len(hay_offsets), len(ids)
        budget -= over


# ---------------------------------------------------------------- what the heads do

def retrieval_score(weights: torch.Tensor, ids: list[int], prompt: Prompt) -> torch.Tensor:
    """[heads]: Wu et al.'s retrieval score from the weights [heads, answer tokens, keys] of the queries
    that predict the answer's tokens: the share of answer tokens whose most attended key is that same
    token inside the fact (the head copies it from context)."""
    ids_t = torch.as_tensor(ids, device=weights.device)
    top = weights.argmax(-1)  # [heads, A]
    wanted = ids_t[prompt.answer[0]: prompt.answer[1]]
    copied = (top >= prompt.fact[0]) & (top < prompt.fact[1]) & (ids_t[top] == wanted[None])
    return copied.float().mean(-1)


def fact_mass(weights: torch.Tensor, prompt: Prompt) -> torch.Tensor:
    """[heads]: attention the answer's queries put on the fact's tokens, mean over those queries."""
    return weights[..., prompt.fact[0]: prompt.fact[1]].sum(-1).mean(-1)


def window_start(mechanism: str | None, params: dict, n: int, row: int) -> int | None:
    """The first key of the window a mechanism whose mask depends on positions alone lets query `row`
    see (keys before it unseen, but for sinks), from its own `reach`; None where it sees every earlier
    key or where what it sees depends on the text (LSH, routing)."""
    if mechanism in (None, DENSE) or mechanism in WHOLE_TEXT:
        return None
    q, k, v = torch.randn(3, 1, n, 8, generator=torch.Generator().manual_seed(0))
    seen = REGISTRY[mechanism].run(q, k, v, **params).reach(torch.tensor([row]))[0, 0, : row + 1]
    unseen = (~seen).nonzero()
    return None if not len(unseen) else int(unseen.max()) + 1


def _check_ablate(lm: LoadedModel, ablate) -> tuple[tuple[int, int], ...]:
    pairs = []
    for pair in ablate or ():
        try:
            layer, head = pair
        except (TypeError, ValueError) as err:
            raise ValueError(f"ablate holds {pair!r}: name each head as a pair (layer, head)") from err
        if not all(isinstance(x, int) and not isinstance(x, bool) for x in (layer, head)) or not (
                0 <= layer < lm.layers and 0 <= head < lm.heads):
            raise ValueError(f"ablate names head {pair!r}: layers run 0..{lm.layers - 1}, heads 0..{lm.heads - 1}")
        pairs.append((layer, head))
    return tuple(sorted(set(pairs)))


def _attention(lm: LoadedModel, mechanism: str | None, params: dict, layers: tuple[int, ...],
               ablate: tuple[tuple[int, int], ...], rows: torch.Tensor, into: dict) -> dict:
    """Each layer's attention for one pass: the mechanism where listed, the layer's own elsewhere, every
    one recording the answer's rows; ablated heads switched off."""
    attend = {}
    for layer in range(lm.layers):
        swapped = mechanism is not None and layer in layers
        fn = mechanism_attention(mechanism if swapped else DENSE, params if swapped else {}, (rows, into))
        off = [h for a, h in ablate if a == layer]
        attend[layer] = forward.ablating(off, fn) if off else fn
    return attend


def _probe_one(lm: LoadedModel, prompt: Prompt, mechanism: str | None, params: dict, layers: tuple[int, ...],
               ablate: tuple[tuple[int, int], ...], progress) -> tuple[float, int, np.ndarray, np.ndarray]:
    """One prompt through the model: (answer probability, first token's rank, retrieval, fact mass)."""
    into: dict[int, torch.Tensor] = {}
    rows = prompt.rows
    hidden = forward.forward(lm, prompt.ids, _attention(lm, mechanism, params, layers, ablate, rows, into),
                             progress=progress)
    with torch.no_grad():
        logp = torch.log_softmax(forward.logits(lm, hidden[rows.to(hidden.device)]).double(), dim=-1)
        targets = torch.tensor(prompt.ids[prompt.answer[0]: prompt.answer[1]], device=logp.device)
        got = logp.gather(1, targets[:, None])[:, 0]
        rank = int((logp[0] > got[0]).sum()) + 1
        retrieval = torch.stack([retrieval_score(into[layer], prompt.ids, prompt) for layer in range(lm.layers)])
        mass = torch.stack([fact_mass(into[layer], prompt) for layer in range(lm.layers)])
    return math.exp(float(got.sum())), rank, retrieval.cpu().numpy(), mass.cpu().numpy()


def needle_probe(text: str | None = None, fact: str = FACT, question: str = QUESTION, answer: str = ANSWER,
                 positions=POSITIONS, model: str | LoadedModel = "smollm2", mechanism: str | None = None,
                 params: dict | None = None, layers=None, ablate=None, max_tokens: int = 2048,
                 progress=None) -> NeedleProbe:
    """The fact planted at each relative position of the text (None: the bundled field guide), asked back
    (see the module docstring). mechanism: swapped into `layers` (None: all) as explorer.in_model does;
    None is the model's own attention. ablate: (layer, head) pairs whose outputs are zeroed.
    progress(done, total) after each layer of each position's pass. Everything is checked first."""
    text = load_sample(HAYSTACK) if text is None else text
    _check_text(text)
    where = check_parts(fact, question, answer, positions)
    if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1:
        raise ValueError(f"max_tokens={max_tokens!r} must be a whole number of at least 1")
    lm = load_causal(model)
    values = {} if mechanism is None else check_mechanism(mechanism, params)
    if mechanism is None and params:
        raise ValueError("params without a mechanism: name the mechanism they belong to")
    swapped = tuple(_check_layers(lm, layers))
    off = _check_ablate(lm, ablate)
    made, used, total = prompts(lm, text, fact, question, answer, where, min(max_tokens, lm.max_tokens))
    start = time.perf_counter()
    out = []
    for i, prompt in enumerate(made):
        def step(done, layers_, i=i):
            if progress:
                progress(i * lm.layers + done, len(made) * lm.layers)

        out.append(_probe_one(lm, prompt, mechanism, values, swapped, off, step))
    prob, rank, retrieval, mass = zip(*out)
    first = made[0]
    return NeedleProbe(
        model=lm.name, mechanism=mechanism, params={k: v for k, v in values.items() if v is not None},
        layers=swapped if mechanism is not None else tuple(range(lm.layers)), ablate=off, positions=where,
        token_positions=np.array([m.fact[0] for m in made]), tokens=np.array([len(m.ids) for m in made]),
        answer_prob=np.array(prob), answer_rank=np.array(rank), retrieval=np.stack(retrieval),
        fact_mass=np.stack(mass), text_tokens=used, total_tokens=total,
        window_start=window_start(mechanism, values, len(first.ids), first.answer[0] - 1), prefix=len(lm.prefix),
        prompts=made,
        seconds=time.perf_counter() - start)


# ---------------------------------------------------------------- switching heads off

KS = (1, 2, 5, 10)  # heads switched off, as Wu et al. compare them
DRAWS = 3  # random draws of k heads at each k


@dataclass(frozen=True)
class Ablation:
    """One set of heads switched off: the top k retrieval heads, or draw `draw` of k random ones."""

    k: int
    heads: str  # "top" or "random"
    draw: int
    off: tuple[tuple[int, int], ...]


def ablations(probe: NeedleProbe, ks=KS, draws: int = DRAWS, seed: int = 0) -> list[Ablation]:
    """For each k: the probe's top k retrieval heads, and `draws` sets of k heads drawn at random from
    the rest (every head outside the top max(ks): heads that do not retrieve, as Wu et al. draw them)."""
    ks = sorted({int(k) for k in ks})
    layers, heads = probe.retrieval.shape[1:]
    if not ks or ks[0] < 1 or 2 * ks[-1] > layers * heads:
        raise ValueError(f"k must be at least 1, and the largest k ({ks[-1] if ks else 0}) at most half of the "
                         f"model's {layers * heads} heads, so that as many others remain to draw from")
    top = probe.top_heads(ks[-1])
    rest = [(a, b) for a in range(layers) for b in range(heads) if (a, b) not in set(top)]
    rng = np.random.default_rng(seed)
    out = []
    for k in ks:
        out.append(Ablation(k, "top", 0, tuple(sorted(top[:k]))))
        for d in range(draws):
            out.append(Ablation(k, "random", d, tuple(sorted(rest[i] for i in rng.choice(len(rest), k,
                                                                                       replace=False)))))
    return out


def ablation_frame(sets: list[Ablation], probes: list[NeedleProbe]) -> pd.DataFrame:
    """One line per set of heads switched off: k, which heads, the draw, the heads themselves and the
    answer probability (mean over the probe's positions)."""
    return pd.DataFrame([{"k": s.k, "heads": s.heads, "draw": s.draw, "off": " ".join(f"{a}.{b}" for a, b in s.off),
                          "answer_prob": float(p.answer_prob.mean())} for s, p in zip(sets, probes)])

