"""Dilution on real text: a passage, a later question about it, and ever more of the text between them.

From an encoded text (q, k, v of one layer, token character offsets) and two
token spans, a passage and a question, each step builds a sequence at the
Q/K/V level: the passage tokens' q/k/v, then the first F tokens of a filler
pool, then the question tokens. The pool is the rest of the text in reading
order from just after the passage (wrapping to the start), without the
passage, the question or tokens with no characters (special tokens such as
[CLS]); so F is the question's distance from the passage and the sequence
has n = passage + F + question tokens. Per step we measure, for dense and
each mechanism, the attention mass each question token puts on the passage.

Deviation from rewriting the text itself: each token keeps the q/k/v the
model computed in its original place (its position and context are baked
in), so this isolates what the softmax does with more keys, not what the
model would compute on the new text.

The bundled needle report plants a fact (the cold archive's access code) in
section 2 and asks for it in section 10: NEEDLE_REPORT marks both, and
needle_report_spans finds them in any tokenisation of that text.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from explorer.analysis import experiment, remedies
from explorer.analysis.dilution import int_at_least, merged, prefix_lengths
from explorer.analysis.experiment import Mechanisms, Progress
from explorer.core.checks import check_qkv

Span = tuple[int, int]  # token range [start, stop)
# (begin, end) marker strings of the passage, then the question, in assets/samples/needle_report.md
NEEDLE_REPORT = (("Access code for the cold archive:", "VERMILION-42."),
                 ("What is the access code for the cold archive?", None))
KNOWN = (NEEDLE_REPORT,)  # the passage and question marked in the bundled texts that have them

Markers = tuple[tuple[str, str | None], tuple[str, str | None]]


def find_span(text: str, offsets: list[tuple[int, int]], begin: str, end: str | None = None,
              after: int = 0) -> Span:
    """Tokens covering the first `begin` at or after character `after`, through the first `end` past it.

    end None: the span of `begin` alone. Tokens with no characters are left out.
    """
    start = text.find(begin, after)
    if start < 0:
        raise ValueError(f"{begin!r} does not occur in the text" + (f" after character {after}" if after else ""))
    stop = start + len(begin)
    if end is not None:
        at = text.find(end, stop)
        if at < 0:
            raise ValueError(f"{end!r} does not occur after {begin!r}")
        stop = at + len(end)
    inside = [i for i, (a, b) in enumerate(offsets) if a < b and a < stop and b > start]
    if not inside:
        raise ValueError(f"no token covers {text[start:stop]!r}")
    return inside[0], inside[-1] + 1


def marked_spans(text: str, offsets: list[tuple[int, int]], passage: tuple[str, str | None],
                 question: tuple[str, str | None]) -> tuple[Span, Span]:
    """The passage's span and the question's, the question searched for after the passage's end."""
    p = find_span(text, offsets, *passage)
    return p, find_span(text, offsets, *question, after=offsets[p[1] - 1][1])


def markers_in(text: str) -> Markers | None:
    """The first KNOWN passage and question whose every marker the text holds, so any text carrying
    them (a sample or a pasted copy) opens with its passage and question marked."""
    return next((m for m in KNOWN if all(part in text for pair in m for part in pair if part)), None)


def needle_report_spans(text: str, offsets: list[tuple[int, int]]) -> tuple[Span, Span]:
    """Passage (the access code fact) and question (review question 9) of the bundled needle report."""
    return marked_spans(text, offsets, *NEEDLE_REPORT)


def _check_span(name: str, span, n: int) -> Span:
    a, b = (int(x) for x in span)
    if not 0 <= a < b <= n:
        raise ValueError(f"{name} span {span!r} must satisfy 0 <= start < stop <= {n}")
    return a, b


def filler_pool(offsets: list[tuple[int, int]], passage: Span, question: Span) -> torch.Tensor:
    """Token indices the filler is drawn from, in order: after the passage to the end, then the start."""
    taken = set(range(*passage)) | set(range(*question))
    order = list(range(passage[1], len(offsets))) + list(range(passage[1]))
    return torch.tensor([i for i in order if i not in taken and offsets[i][0] < offsets[i][1]], dtype=torch.long)


def sequence(passage: Span, question: Span, pool: torch.Tensor, filler: int) -> torch.Tensor:
    """Source token indices of one step: passage, the first `filler` pool tokens, question."""
    return torch.cat([torch.arange(*passage), pool[:filler], torch.arange(*question)])


def filler_steps(pool: int, points: int = 10) -> list[int]:
    """0 (passage right before the question) and a log grid up to the whole pool."""
    return sorted({0, *(prefix_lengths(pool, points - 1, start=8) if pool and points > 1 else [])})


@dataclass
class TextNeedle:
    """Attention mass from the question's tokens onto the passage at each filler amount."""

    passage: Span
    question: Span
    fillers: list[int]  # filler tokens between passage and question: the distance
    lengths: list[int]  # n of each step's sequence
    mass: dict[str, np.ndarray]  # name -> [steps, heads, question tokens]
    uniform: list[float]  # per step: mean mass a uniform row over the keys each question token sees would give
    causal: dict[str, bool]  # whether each curve was masked causally
    remedy: tuple = ("none", {})

    @classmethod
    def merge(cls, *parts: TextNeedle) -> TextNeedle:
        """One TextNeedle from several measured on the same spans and steps."""
        return cls(**merged(list(parts), ("passage", "question", "fillers", "lengths", "uniform", "remedy"),
                            ("mass", "causal")))

    def mean(self, name: str) -> np.ndarray:
        """[steps] mass on the passage, mean over heads and question tokens."""
        return self.mass[name].reshape(len(self.fillers), -1).mean(1)

    def frame(self):
        """Tidy table: one line per (mechanism, step): mean, q25, median, q75 over heads and question tokens."""
        import pandas as pd

        lines = []
        for name, mass in self.mass.items():
            for i, filler in enumerate(self.fillers):
                x = mass[i].ravel()
                q25, med, q75 = np.quantile(x, [0.25, 0.5, 0.75])
                lines.append({"mechanism": name, "distance": filler, "n": self.lengths[i], "mass": float(x.mean()),
                              "q25": q25, "median": med, "q75": q75, "uniform": float(self.uniform[i]),
                              "causal": self.causal[name]})
        return pd.DataFrame(lines)


def _uniform(p: int, rows: torch.Tensor, n: int, causal: bool) -> float:
    seen = (rows + 1).double() if causal else torch.full(rows.shape, float(n), dtype=torch.float64)
    return float((p / seen).mean())


def text_dilution(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, offsets: list[tuple[int, int]],
                  passage: Span, question: Span, fillers=None, mechanisms: Mechanisms | None = None,
                  causal: bool = False, remedy: remedies.Spec = None, progress: Progress = None,
                  dense: bool = True) -> TextNeedle:
    """Mass from the question's tokens onto the passage as the text's own material grows between them.

    fillers: filler amounts (default filler_steps of the pool). mechanisms:
    display name -> (Mechanism, params), as dilution_curves; causal masks
    dense and is passed to mechanisms that take it. remedy rescales each
    sequence's queries. progress(done, total) after each (step, curve).
    """
    q, k, v = check_qkv(q, k, v)
    n_text = q.shape[1]
    if len(offsets) != n_text:
        raise ValueError(f"offsets has {len(offsets)} entries for {n_text} tokens")
    passage, question = _check_span("passage", passage, n_text), _check_span("question", question, n_text)
    if passage[1] > question[0]:
        raise ValueError(f"the passage {passage} must end before the question {question} starts")
    pool = filler_pool(offsets, passage, question)
    fillers = filler_steps(len(pool)) if fillers is None else sorted({int_at_least("filler", f, 0) for f in fillers})
    if not fillers or fillers[-1] > len(pool):
        raise ValueError(f"fillers must hold at least one amount, each in 0..{len(pool)} (the text's other tokens)")
    curves = experiment.curves(mechanisms, dense)
    remedy = remedies.check_remedy(remedy)
    plen, qlen = passage[1] - passage[0], question[1] - question[0]
    steps = [sequence(passage, question, pool, filler).to(q.device) for filler in fillers]
    lengths = [idx.numel() for idx in steps]
    rows = [torch.arange(n - qlen, n, device=q.device) for n in lengths]
    uniform = [_uniform(plen, r.cpu(), n, causal) for r, n in zip(rows, lengths)]
    mass = {name: np.empty((len(fillers), q.shape[0], qlen)) for name in curves}
    masked = {}
    for i, name, att in experiment.measured(steps, lambda idx: (q[:, idx], k[:, idx], v[:, idx]), curves, causal,
                                            remedy, progress=progress):
        masked[name] = att.causal
        mass[name][i] = att.weights(rows[i])[..., :plen].sum(-1).cpu().numpy()
    return TextNeedle(passage, question, fillers, lengths, mass, uniform, masked, remedy)
