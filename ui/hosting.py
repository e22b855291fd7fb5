"""Hosted mode: what a public demo lets strangers do, switched on by EXPLORER_HOSTED=1.

  EXPLORER_HOSTED      1: hosted mode (default: off, the app as a person runs it for themselves)
  EXPLORER_MODELS      comma-separated model names a hosted demo offers (default: minilm)
  EXPLORER_MAX_TOKENS  the longest text a hosted demo encodes, in tokens (default: 32768)
  EXPLORER_WORKERS     heavy computations run at once in a hosted demo (default: the CPU count)
  EXPLORER_SWEEP_MB    the largest corpus sweep (Parquet) a hosted demo takes as an upload, in MB (default: 20)

In hosted mode a model comes only from the list (never a path, never a download), a longer text
is encoded only when the visitor chooses its first EXPLORER_MAX_TOKENS tokens, and heavy steps
wait in one queue (ui.cache); the Corpus page reads only uploaded sweeps, never a path on the server. Everything is read from the environment when asked, so a test can
switch modes without a new process.
"""
from __future__ import annotations

import os

from explorer.core.bundled import check_name
from explorer.core.encoding import DEFAULT_MODEL

DEFAULT_MAX_TOKENS = 32_768
DEFAULT_SWEEP_MB = 20


def hosted() -> bool:
    return os.environ.get("EXPLORER_HOSTED", "") == "1"


def models() -> tuple[str, ...]:
    names = tuple(m.strip() for m in os.environ.get("EXPLORER_MODELS", DEFAULT_MODEL).split(",") if m.strip())
    return names or (DEFAULT_MODEL,)


def _positive_int(name: str, default: int) -> int:
    raw = os.environ.get(name, str(default))
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if value < 1:
        raise ValueError(f"{name}={raw!r} must be a whole number of at least 1")
    return value


def max_tokens() -> int | None:
    """The token cap of a hosted demo; None when the app is not hosted."""
    return _positive_int("EXPLORER_MAX_TOKENS", DEFAULT_MAX_TOKENS) if hosted() else None


def workers() -> int | None:
    """How many heavy computations a hosted demo runs at once; None when not hosted (no queue)."""
    return _positive_int("EXPLORER_WORKERS", os.cpu_count() or 1) if hosted() else None


def sweep_mb() -> int | None:
    """The largest sweep a hosted demo takes as an upload, in MB; None when not hosted (the server's
    own upload limit holds, and a larger sweep is opened by its path)."""
    return _positive_int("EXPLORER_SWEEP_MB", DEFAULT_SWEEP_MB) if hosted() else None


def check_model(name: str) -> None:
    """ValueError when a hosted demo does not offer this model, or when the name can name no model
    (a folder without one, a path or id that cannot be): a link's model is refused as it is read."""
    if hosted() and name not in models():
        raise ValueError(f"this demo offers only these models: {', '.join(models())}")
    check_name(name.strip())
