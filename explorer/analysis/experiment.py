"""One experiment runner: every curve, dense or a mechanism, on every measured sequence.

The dilution analyses (prefix curves, a passage and its question, a planted
needle) differ in the sequences they build and what they read of the weights,
not in how a curve attends: that is `attend`, and `measured` runs it over the
sequences. A curve is DENSE, a mechanism as (Mechanism, params), or a
mechanism's Result already run (the app caches them). Dense attends by the
given AttentionRule (a model's own rule), or by exact softmax
(explorer.core.attention), masked when causal, without one. A mechanism that
takes `causal` gets it from the text unless its params say otherwise. A remedy
rescales each sequence's queries once, before any curve sees them
(explorer.analysis.remedies).
"""
from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from explorer.analysis import remedies
from explorer.core import attention
from explorer.core.checks import check_qkv
from explorer.core.rule import AttentionRule
from explorer.mechanisms.base import Mechanism, Result

DENSE = "dense"

Curve = str | tuple[Mechanism, dict] | Result
Mechanisms = dict[str, tuple[Mechanism, dict]]
Progress = Callable[[int, int], None] | None
Rows = Callable[[torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class Attended:
    """One curve on one sequence, read row by row (rows stream in chunks, a mechanism runs once)."""

    weights: Rows  # rows -> [heads, len(rows), n]
    reach: Rows  # rows -> bool [heads, len(rows), n]: keys each query can attend to at all
    causal: bool  # whether the curve was masked causally


def check_mechanisms(mechanisms: Mechanisms | None) -> Mechanisms:
    """Display name -> (Mechanism, params), each checked; DENSE is the reference's name, not theirs."""
    mechanisms = dict(mechanisms or {})
    if DENSE in mechanisms:
        raise ValueError(f"the name {DENSE!r} is the exact reference; give the mechanism another name")
    for name, pair in mechanisms.items():
        if not (isinstance(pair, tuple) and len(pair) == 2 and isinstance(pair[0], Mechanism)):
            raise ValueError(f"mechanism {name!r} must be given as (Mechanism, params dict)")
        pair[0].validate(pair[1])
    return mechanisms


def curves(mechanisms: Mechanisms | None, dense: bool = True) -> dict[str, Curve]:
    """The curves to measure, dense first; dense=False leaves it out (to merge with one measured once)."""
    mechanisms = check_mechanisms(mechanisms)
    out = {DENSE: DENSE, **mechanisms} if dense else mechanisms
    if not out:
        raise ValueError("nothing to measure: give mechanisms or keep dense=True")
    return out


def with_causal(mech: Mechanism, params: dict, causal: bool) -> dict:
    """The caller's params, with causal filled in where the mechanism has it and they left it out."""
    if causal and "causal" in {p.name for p in mech.params} and "causal" not in params:
        return {**params, "causal": True}
    return dict(params)


def dense(q: torch.Tensor, k: torch.Tensor, causal: bool = False, rule: AttentionRule | None = None) -> Attended:
    """Dense attention by `rule`; without one exact softmax, masked when causal (attention.weights: the
    yardstick's numbers to the last bit, which AttentionRule.plain's log-sum-exp form misses by an ulp)."""
    q, k, _ = check_qkv(q, k)
    if rule is None:
        return _masked(AttentionRule.plain(q.shape[-1], causal), lambda rows: attention.weights(q, k, rows, causal), q)
    return _masked(rule, lambda rows: rule.weights(q, k, rows), q)


def _masked(rule: AttentionRule, weights: Rows, q: torch.Tensor) -> Attended:
    keys = torch.arange(q.shape[1], device=q.device)
    return Attended(weights, lambda rows: rule.allowed(rows, keys).expand(q.shape[0], -1, -1), rule.causal)


def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, curve: Curve, causal: bool = False,
           rule: AttentionRule | None = None) -> Attended:
    """The one switch between dense and a mechanism: `curve` on this q, k, v (see the module docstring)."""
    if isinstance(curve, Result):
        return Attended(curve.weights, curve.reach, bool(curve.params.get("causal", False)))
    if curve == DENSE:
        return dense(q, k, causal, rule)
    mech, params = curve
    return attend(q, k, v, mech.run(q, k, v, **with_causal(mech, params, causal)))


@torch.no_grad()
def measured(steps: Sequence, sequence: Callable[[Any], tuple[torch.Tensor, torch.Tensor, torch.Tensor]],
             curves: dict[str, Curve], causal: bool = False, remedy: remedies.Spec = None,
             rule: AttentionRule | None = None, progress: Progress = None) -> Iterator[tuple[int, str, Attended]]:
    """(step index, curve name, Attended) for every curve on each step's sequence(step) -> (q, k, v).

    The remedy rescales the sequence's queries once, with n the keys the text offers each query
    (the `causal` argument), whatever a mechanism then reaches; progress(done, total) follows each curve.
    """
    total = len(steps) * len(curves)
    for i, step in enumerate(steps):
        q, k, v = sequence(step)
        q = remedies.apply(q, remedy, causal)
        for j, (name, curve) in enumerate(curves.items()):
            yield i, name, attend(q, k, v, curve, causal, rule)
            if progress:
                progress(i * len(curves) + j + 1, total)
