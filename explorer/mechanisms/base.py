"""The one interface every mechanism follows: validated params in, Result out.

A Result keeps the invariant of the design: `weights(rows) @ v` equals
`output[:, rows]`, so what a page draws is what was computed.
"""
from __future__ import annotations

import math
import numbers
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import torch

from explorer.core.checks import as_rows, check_qkv
from explorer.core.device import synchronize


@dataclass(frozen=True)
class Param:
    """One tunable parameter: its default, its legal range, how a form shows it, a line of help.

    The type comes from the default (bool, int, float, or str with choices).
    A default of None marks a parameter the mechanism checks itself
    (a tensor such as explicit LSH rotations). `label` is what a person reads
    (with its unit), `step` the increment a form offers, `offered` the values a
    form lists when only some of the legal range makes sense.
    """

    name: str
    default: Any
    lo: float | None = None
    hi: float | None = None
    choices: tuple | None = None
    help: str = ""
    label: str = ""
    step: float | None = None
    offered: tuple | None = None
    choice_text: dict | None = None  # choice -> the words a form shows for it

    def text_of(self, choice) -> str:
        return (self.choice_text or {}).get(choice, str(choice))

    @property
    def title(self) -> str:
        """The label a form shows: `label`, or the name in words."""
        return self.label or self.name.replace("_", " ").capitalize()

    def check(self, owner: str, value: Any) -> Any:
        def bad(what: str) -> ValueError:
            return ValueError(f"{owner}: parameter {self.name}={value!r} {what}")

        if self.default is None:
            return value
        if self.choices is not None:
            if value not in self.choices:
                raise bad(f"must be one of {list(self.choices)}")
            return value
        if isinstance(self.default, bool):
            if not isinstance(value, (bool, numbers.Integral)) or value not in (0, 1):
                raise bad("must be True or False")
            return bool(value)
        if isinstance(self.default, numbers.Integral):
            if isinstance(value, bool) or not isinstance(value, numbers.Integral):
                raise bad(f"must be an integer in {self.range_text()}")
            value = int(value)
        else:
            if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
                raise bad(f"must be a finite number in {self.range_text()}")
            value = float(value)
        if (self.lo is not None and value < self.lo) or (self.hi is not None and value > self.hi):
            raise bad(f"is out of range {self.range_text()}")
        return value

    def range_text(self) -> str:
        lo = "-inf" if self.lo is None else f"{self.lo:g}"
        hi = "inf" if self.hi is None else f"{self.hi:g}"
        return f"[{lo}, {hi}]"


@dataclass
class Structure:
    """What a run looked like besides its output (buckets, segments, clusters), for the pages.

    Each mechanism declares its own subclass beside it, every field with its shape, so a page
    reads `res.structure.perm` and a renamed field fails at import or in a test, not on a page.
    A mechanism with nothing to show leaves this empty one.
    """


@dataclass
class Result:
    """What a mechanism computed, and the effective weights that produced it."""

    output: torch.Tensor
    weights_fn: Callable[[torch.Tensor], torch.Tensor]
    structure: Structure = field(default_factory=Structure)
    cost: dict = field(default_factory=dict)
    reach_fn: Callable[[torch.Tensor], torch.Tensor] | None = None
    params: dict = field(default_factory=dict)

    @property
    def n(self) -> int:
        return self.output.shape[1]

    def weights(self, rows) -> torch.Tensor:
        """[heads, len(rows), n]: the weights the listed queries put on the original keys."""
        return self.weights_fn(as_rows(rows, self.n, self.output.device))

    def reach(self, rows) -> torch.Tensor:
        """Boolean [heads, len(rows), n]: keys each query can attend to at all."""
        rows = as_rows(rows, self.n, self.output.device)
        if self.reach_fn is not None:
            return self.reach_fn(rows)
        return self.weights_fn(rows) != 0


def check_params(owner: str, declared: tuple[Param, ...], given: dict) -> dict:
    """The declared parameters' defaults, overridden by the given values, each checked alone."""
    known = {p.name: p for p in declared}
    unknown = sorted(set(given) - set(known))
    if unknown:
        raise ValueError(f"{owner}: unknown parameter(s) {unknown}; known: {sorted(known)}")
    values = {p.name: p.default for p in declared}
    for name, value in given.items():
        values[name] = known[name].check(owner, value)
    return values


def dense_cost(heads: int, n: int, d: int, dv: int | None = None) -> dict:
    """FLOPs and bytes of exact attention: two n x n matmuls and a score matrix."""
    dv = d if dv is None else dv
    return {"flops": 2 * heads * n * n * (d + dv), "bytes": 4 * heads * (n * n + n * (2 * d + 2 * dv))}


class Mechanism:
    """Base of every mechanism: subclasses set the class fields and `compute`.

    `compute` returns a Result whose cost holds the mechanism's own flops and
    bytes; `run` validates, times it and adds dense's figures beside them.
    """

    key: str = ""
    title: str = ""
    summary: str = ""
    params: tuple[Param, ...] = ()
    # Names of the parameters saying which model head the first given head is and how many
    # the model has, for mechanisms whose parameters differ per head (ALiBi slopes, T5 biases).
    head_params: tuple[str, str] | None = None

    def defaults(self) -> dict:
        return {p.name: p.default for p in self.params}

    def for_head(self, params: dict, head: int, heads: int) -> dict:
        """params for a run on head `head` alone of a model with `heads` heads."""
        if self.head_params is None:
            return dict(params)
        first, total = self.head_params
        return {**params, first: head, total: heads}

    def validate(self, params: dict) -> dict:
        """Every parameter checked alone (Param.check), then together (check_together)."""
        values = check_params(self.key, self.params, params)
        self.check_together(values)
        return values

    def check_together(self, values: dict) -> None:
        """Rules between parameters (or values a range cannot express): ValueError naming the parameter."""

    def run(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, **params) -> Result:
        q, k, v = check_qkv(q, k, v)
        values = self.validate(params)
        start = time.perf_counter()
        with torch.no_grad():
            res = self.compute(q, k, v, **values)
        synchronize(q.device)
        heads, n, d = q.shape
        dense = dense_cost(heads, n, d, v.shape[2])
        res.cost = {**res.cost, "seconds": time.perf_counter() - start,
                    "dense_flops": dense["flops"], "dense_bytes": dense["bytes"]}
        res.params = values
        return res

    def compute(self, q, k, v, **params) -> Result:  # pragma: no cover - interface
        raise NotImplementedError
