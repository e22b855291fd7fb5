"""Long-sequence attention explorer: the library behind the app (no streamlit here)."""
from explorer.core.device import pick_device
from explorer.core.doc import Doc
from explorer.core.stats import AttentionStats, attention_stats
from explorer.core.attention import model_attention
from explorer.core.rule import AttentionRule
from explorer.core.synthetic import synthetic

__all__ = ["Doc", "AttentionRule", "AttentionStats", "model_attention", "attention_stats", "encode", "encode_layers",
           "in_model", "needle_probe", "pick_device", "synthetic"]


def __getattr__(name):
    # encoding pulls in transformers; import it only when asked for
    if name in ("encode", "encode_layers"):
        from explorer.core import encoding

        return getattr(encoding, name)
    if name == "in_model":  # the model's forward pass with a mechanism swapped in: transformers too
        from explorer.analysis.in_model import in_model

        return in_model
    if name == "needle_probe":  # a fact planted and asked back, through the same forward pass
        from explorer.analysis.needle_probe import needle_probe

        return needle_probe
    raise AttributeError(name)
