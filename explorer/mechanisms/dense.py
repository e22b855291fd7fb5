"""Dense softmax attention: the exact reference, streamed over query chunks.

`causal` defaults to False whatever the Doc: a mechanism sees only q, k, v,
not the Doc they came from, so on a decoder model's Doc (doc.causal True)
pass causal=doc.causal to get the model's own masked attention (the app's
forms and analyses do).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from explorer.core import attention
from explorer.core.device import chunk_rows
from explorer.core.rows import row_chunks
from explorer.mechanisms.base import Mechanism, Param, Result, Structure, dense_cost


@dataclass
class DenseStructure(Structure):
    """Dense attention has nothing to show but whether it was masked."""

    causal: bool  # whether keys after the query were masked


class Dense(Mechanism):
    key = "dense"
    title = "Dense attention"
    summary = (
        "Every query attends to every key: softmax(q kᵀ / √d) v. It is the reference "
        "every other mechanism is measured against.")
    params = (Param("causal", False, help="mask keys after the query (decoder models)",
              label="Causal mask: keys after the query hidden"),)

    def compute(self, q, k, v, causal):
        heads, n, d = q.shape
        out = torch.empty(heads, n, v.shape[2], device=q.device, dtype=v.dtype)
        for rows in row_chunks(n, chunk_rows(n, heads, q.device), q.device):
            out[:, rows] = attention.weights(q, k, rows, causal) @ v
        return Result(out, lambda rows: attention.weights(q, k, rows, causal),
                      structure=DenseStructure(causal), cost=dense_cost(heads, n, d, v.shape[2]))


MECHANISM = Dense()
