"""Sample texts: those written for this project (assets/samples) and the Python
language reference that every Python installation carries in pydoc_data."""
from __future__ import annotations

from pathlib import Path

SAMPLES_DIR = Path(__file__).resolve().parents[2] / "assets" / "samples"
PYTHON_REFERENCE = "Python language reference (pydoc_data)"


def _title(path: Path) -> str:
    first = path.read_text(encoding="utf-8").lstrip().splitlines()[0]
    return first.lstrip("# ").strip() or path.stem


def sample_names() -> list[str]:
    """Titles of the bundled samples, shortest file first, then the Python reference."""
    files = sorted(SAMPLES_DIR.glob("*.md"), key=lambda p: p.stat().st_size)
    return [_title(p) for p in files] + [PYTHON_REFERENCE]


def python_reference() -> str:
    """The language reference topics pydoc shows, joined in a stable order."""
    from pydoc_data.topics import topics

    return "\n\n".join(f"{name}\n{'=' * len(name)}\n\n{topics[name].strip()}" for name in sorted(topics))


def load_sample(name: str) -> str:
    if name == PYTHON_REFERENCE:
        return python_reference()
    for path in SAMPLES_DIR.glob("*.md"):
        if _title(path) == name:
            return path.read_text(encoding="utf-8")
    raise ValueError(f"unknown sample {name!r}; choose one of {sample_names()}")
