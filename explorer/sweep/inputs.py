"""What a sweep reads: files, folders of .txt/.md files, JSONL files of texts, or the bundled samples.

The driver reads every text (so workers on a cluster need no shared filesystem); a text that
cannot be read becomes a Document holding its error, which the sweep records as one error row.
"""
from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from explorer.core.samples import PYTHON_REFERENCE, load_sample, sample_names

TEXT_SUFFIXES = (".txt", ".md")


@dataclass(frozen=True)
class Document:
    name: str  # short: a sample's title, a file's name, "c.jsonl#12"
    source: str  # how to get the text again: "sample:<title>", an absolute path, "/x/c.jsonl#12"
    text: str = ""
    error: str = ""  # why the text could not be read ("" when it was)


def samples() -> list[Document]:
    """The samples written for this project (not the 129k-token Python reference)."""
    return [Document(name, f"sample:{name}", load_sample(name)) for name in sample_names() if name != PYTHON_REFERENCE]


def _file(path: Path, name: str) -> Document:
    try:
        return Document(name, str(path), path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as err:
        return Document(name, str(path), error=f"cannot read {path}: {err}")


def _jsonl(path: Path) -> list[Document]:
    """One Document per non-blank line {"text": ..., "name": optional}; a bad line is an error Document."""
    out = []
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as err:
        return [Document(path.name, str(path), error=f"cannot read {path}: {err}")]
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        where = f"{path}#{number}"
        try:
            item = json.loads(line)
            if not isinstance(item, dict) or not isinstance(item.get("text"), str):
                raise ValueError('each line must be a JSON object with a "text" string')
            out.append(Document(str(item.get("name") or f"{path.name}#{number}"), where, item["text"]))
        except ValueError as err:
            out.append(Document(f"{path.name}#{number}", where, error=f"line {number} of {path}: {err}"))
    return out


def read_inputs(paths) -> list[Document]:
    """The Documents of files, folders (their .txt and .md files, recursively) and .jsonl files;
    the bundled samples when no path is given. ValueError for a path that does not exist, a folder
    without texts, or two inputs with the same source."""
    if not paths:
        return samples()
    docs = []
    for given in paths:
        path = Path(given).expanduser().resolve()
        if path.is_dir():
            files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix in TEXT_SUFFIXES)
            if not files:
                raise ValueError(f"folder {given} holds no {' or '.join(TEXT_SUFFIXES)} files")
            docs += [_file(p, str(p.relative_to(path))) for p in files]
        elif path.suffix == ".jsonl" and path.is_file():
            docs += _jsonl(path)
        elif path.is_file():
            docs.append(_file(path, path.name))
        else:
            raise ValueError(f"input {given} is not a file or a folder")
    twice = sorted(source for source, count in Counter(d.source for d in docs).items() if count > 1)
    if twice:
        raise ValueError(f"inputs name these texts more than once: {twice}")
    return docs
