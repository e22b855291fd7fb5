"""Long-sequence attention explorer: the library behind the app (no streamlit here)."""
from explorer.dense import DenseStats, dense_stats
from explorer.device import pick_device
from explorer.doc import Doc
from explorer.synthetic import synthetic

__all__ = ["Doc", "DenseStats", "dense_stats", "encode", "pick_device", "synthetic"]


def __getattr__(name):
    # encoding pulls in transformers; import it only when asked for
    if name == "encode":
        from explorer.encoding import encode

        return encode
    raise AttributeError(name)
