"""A sweep's needle table (`python -m explorer.sweep ... --needle`), declared, read and summarised for
the Corpus page: one row per (document, model, mechanism, position) of explorer.needle_probe, the
heads whose retrieval score passes RETRIEVAL_PASS at that position, and one error row per document
that failed (position NaN, its error text).

The table lives in the folder DIRECTORY inside the sweep's --out: Parquet readers skip names that
start with "_", so the head table (explorer.analysis.corpus) reads the same folder as before.
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd
import pyarrow as pa

from explorer.analysis.corpus import named, read_side
from explorer.mechanisms import DENSE

DIRECTORY = "_needle"
SCHEMA = pa.schema([
    ("document", pa.string()), ("source", pa.string()), ("model", pa.string()), ("mechanism", pa.string()),
    ("params", pa.string()), ("position", pa.float64()), ("token_position", pa.int64()), ("tokens", pa.int64()),
    ("text_tokens", pa.int64()), ("answer_prob", pa.float64()), ("answer_rank", pa.int64()),
    ("retrieval_heads", pa.list_(pa.string())), ("retrieval_scores", pa.list_(pa.float64())),
    ("seconds", pa.float64()), ("error", pa.string())])


def folder(sweep: str | Path) -> Path:
    """Where a sweep directory keeps its needle table."""
    return Path(sweep) / DIRECTORY


def read(source: str | Path | list[bytes]) -> pd.DataFrame | None:
    """The needle table of a sweep directory, or of uploaded files' bytes (corpus.read_side), or None when
    it has none (a sweep without --needle)."""
    return read_side(source, DIRECTORY, SCHEMA, ["source", "model", "mechanism", "params", "position"])


def curves(frame: pd.DataFrame) -> pd.DataFrame:
    """Per model, mechanism (named as the head table's charts name it) and position: the median answer
    probability over documents, the lowest and the highest, and how many documents were measured."""
    fine = named(frame)
    out = fine.groupby(["model", "mechanism", "shown", "position"]).agg(
        median=("answer_prob", "median"), low=("answer_prob", "min"), high=("answer_prob", "max"),
        documents=("source", "nunique")).reset_index()
    return out.assign(dense=out.mechanism == DENSE).sort_values(["model", "dense", "shown", "position"]).drop(
        columns="dense").reset_index(drop=True)
