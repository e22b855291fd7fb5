"""The settings registry: every setting the app keeps is declared once, next to what owns it.

A Setting names its session key, its default, what values it accepts and whether it travels
in the URL. `Setting.check` is the one validator: values typed into widgets are already in
range (forms take their bounds from the same Setting), and values from outside (a shared
link, a settings file) go through it, so a bad one is refused with a notice naming it,
never silently replaced.

Who declares what:
- the sidebar, the maps and the inspector declare theirs at import (they exist on every page);
- every mechanism parameter is a setting "p.<mechanism>.<param>", derived from its Param;
- a page declares its own at the top of its script with `declare`; their keys start with the
  page's name and an underscore ("dilution_points" belongs to views/dilution.py).

A link may carry a page's settings before that page ran in the session: those values wait in
`pending` until the page declares them. A key that no part of the app owns is ignored with a
notice (see ui.share).
"""
from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from typing import Any, Callable

import streamlit as st

from explorer.mechanisms import REGISTRY, Mechanism, Param

PENDING = "_pending_settings"  # session key: values from a link waiting for their page: key -> raw value
REFUSED = "_refused_settings"  # session key: (setting, reason) notices to show once
MAX_TEXT = 200  # characters a free-text setting may hold


@dataclass(frozen=True)
class Setting:
    """One setting. The default's type says which values fit: bool, int, float, str (one of
    `choices`, or free text up to `max_chars`), list (several of `choices`) or tuple (a
    window (start, stop) of integers with lo <= start < stop <= hi)."""

    key: str
    default: Any
    lo: float | None = None
    hi: float | None = None
    choices: tuple | None = None
    url: bool = True
    max_chars: int = MAX_TEXT
    param: Param | None = None  # the mechanism parameter this setting holds, checked by it as well
    owner: str = ""  # the mechanism key of a parameter setting
    rule: Callable[[Any], None] | None = None  # a check the type cannot say (ValueError when it fails)
    bounds: str = ""  # the range in words, for a setting whose real range is the model's or the text's

    def check(self, value: Any) -> Any:
        """The value in the form its widget holds, or ValueError saying why it does not fit."""
        def bad(why: str) -> ValueError:
            return ValueError(f"{self.key}: {why}")

        kind = type(self.default)
        if isinstance(self.default, bool):
            if not isinstance(value, bool):
                raise bad("must be true or false")
            return value
        if self.choices is not None and not isinstance(self.default, list):
            if not isinstance(value, type(self.default)) or isinstance(value, bool) or value not in self.choices:
                raise bad(f"must be one of {', '.join(map(str, self.choices))}")
            return value
        if isinstance(self.default, numbers.Integral):
            if isinstance(value, bool) or not isinstance(value, numbers.Integral):
                raise bad(f"must be a whole number{self._range()}")
            value = int(value)
        elif isinstance(self.default, float):
            if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
                raise bad(f"must be a finite number{self._range()}")
            value = float(value)
        elif isinstance(self.default, str):
            if not isinstance(value, str) or len(value) > self.max_chars:
                raise bad(f"must be a text of at most {self.max_chars} characters")
            return self._ruled(value, bad)
        elif isinstance(self.default, list):
            return self._check_list(value, bad)
        elif isinstance(self.default, tuple):
            return self._check_window(value, bad)
        else:  # pragma: no cover - a declaration error, caught by the settings tests
            raise TypeError(f"setting {self.key}: unsupported default type {kind.__name__}")
        if (self.lo is not None and value < self.lo) or (self.hi is not None and value > self.hi):
            raise bad(f"is out of range{self._range()}")
        if self.param is not None:
            try:
                value = self.param.check(self.owner, value)
            except ValueError as err:
                raise bad(str(err)) from err
        return value

    def _ruled(self, value, bad):
        if self.rule is not None:
            try:
                self.rule(value)
            except ValueError as err:
                raise bad(str(err)) from err
        return value

    def _range(self) -> str:
        """The range a refusal names: `bounds` where lo and hi are only a ceiling over every model."""
        if self.bounds:
            return f" ({self.bounds})"
        if self.lo is None and self.hi is None:
            return ""
        lo = "-inf" if self.lo is None else f"{self.lo:g}"
        hi = "inf" if self.hi is None else f"{self.hi:g}"
        return f" in [{lo}, {hi}]"

    def _check_list(self, value, bad) -> list:
        if not isinstance(value, (list, tuple)) or not all(isinstance(x, str) for x in value):
            raise bad("must be a list of names")
        unknown = [x for x in value if x not in (self.choices or ())]
        if unknown or len(set(value)) != len(value):
            raise bad(f"each name must be one of {', '.join(self.choices or ())}, once")
        return list(value)

    def _check_window(self, value, bad) -> tuple:
        if (not isinstance(value, (list, tuple)) or len(value) != 2
                or not all(isinstance(x, numbers.Integral) and not isinstance(x, bool) for x in value)):
            raise bad("must be a pair [start, stop] of whole numbers")
        a, b = int(value[0]), int(value[1])
        lo = 0 if self.lo is None else self.lo
        if not lo <= a < b or (self.hi is not None and b > self.hi):
            raise bad(f"must satisfy {lo:g} <= start < stop{'' if self.hi is None else f' <= {self.hi:g}'}")
        return a, b


SETTINGS: dict[str, Setting] = {}


def register(*settings: Setting) -> None:
    """Add settings to the process-wide registry (once each; a second, different declaration is a bug)."""
    for s in settings:
        known = SETTINGS.get(s.key)
        if known is not None and known != s:
            raise ValueError(f"setting {s.key!r} is declared twice, differently")
        SETTINGS[s.key] = s


def param_key(mech: Mechanism, name: str) -> str:
    return f"p.{mech.key}.{name}"


def param_setting(mech: Mechanism, p: Param) -> Setting:
    """The setting "p.<owner>.<param>" of a mechanism's (or a remedy's) parameter."""
    return Setting(param_key(mech, p.name), p.default, p.lo, p.hi, p.choices, param=p, owner=mech.key)


register(*(param_setting(mech, p) for mech in REGISTRY.values() for p in mech.params
           if p.default is not None and p.name not in (mech.head_params or ())))


def owner_page(key: str) -> str:
    """The page a page-owned key belongs to: what stands before its first underscore."""
    return key.split("_", 1)[0]


def declare(*settings: Setting) -> None:
    """Register a page's settings and give each its value in this session: what it holds
    already, else a pending value from a link (checked now), else its default."""
    register(*settings)
    pending = st.session_state.setdefault(PENDING, {})
    for s in settings:
        if s.key in pending:
            set_from_outside(s, pending.pop(s.key))
        st.session_state.setdefault(s.key, s.default)


def settle(page: str) -> None:
    """After `page` ran to its end: pending values it did not declare are not settings of it."""
    pending = st.session_state.get(PENDING, {})
    for key in [k for k in pending if owner_page(k) == page]:
        refuse(key, "no such setting on this page")
        del pending[key]


def set_from_outside(setting: Setting, value: Any) -> bool:
    """Put a value from a link or a file into session state, if its setting accepts it."""
    try:
        st.session_state[setting.key] = setting.check(value)
        return True
    except ValueError as err:
        refuse(setting.key, str(err).removeprefix(f"{setting.key}: "))
        return False


def refuse(key: str, why: str) -> None:
    """Note a refused outside value, to be shown (escaped) once."""
    st.session_state.setdefault(REFUSED, []).append((key, why))


def take_refusals() -> list[tuple[str, str]]:
    return st.session_state.pop(REFUSED, [])


def value(setting: Setting) -> Any:
    """The setting's value in this session (its default before anything set it)."""
    return st.session_state.get(setting.key, setting.default)


def shared() -> dict[str, Any]:
    """The settings of this session that travel in the URL, JSON-ready, and the pending ones."""
    out = {}
    for key, s in SETTINGS.items():
        if s.url and key in st.session_state:
            v = st.session_state[key]
            out[key] = list(v) if isinstance(v, tuple) else v
    out.update(st.session_state.get(PENDING, {}))
    return out


def keep() -> None:
    """Re-assign every declared setting so it outlives a page that does not draw its widget.

    Streamlit drops a widget's state on a run that does not draw it; settings made on one
    page (zoom, mechanism parameters) must survive a visit to another.
    """
    for key in SETTINGS:
        if key in st.session_state:
            st.session_state[key] = st.session_state[key]
