"""Session state that is not a setting, and the values every cached computation keys on.

Settings (what a person chooses: the text source, model, head, zoom, mechanism parameters,
each page's options) are declared in the settings registry (ui.settings), each next to what
owns it. Besides them st.session_state holds:
  encoded              the Encoding of the last successful encoding (below), or absent
  _restored            set once the URL's settings were applied to this session
  _pending_settings    values from a link waiting for the page that declares them
  _refused_settings    outside values that were refused, shown once as a notice (ui.share)
  _ignored_settings    keys from a link or file that no part of the app owns, shown once
  _pending_file, _loaded     a settings file read on the last run, applied before any widget
  _zoom_dragged, _zoom_box   a box dragged on a map, applied on the next run (ui.maps)
  _first_visit, _reopened    a first visit's own run; the shared text already reopened (ui.sidebar)
  _pick, _trim_to      a layer and head chosen on the last run; a hosted demo's "first tokens" choice
  _not_encoded         why the last Run left the previous text in place (ui.document says so on pages)
  _origin              where the shown text came from (a Corpus row, the part of it measured), said on pages
  model_other          the model name being typed below the picker (it becomes the model when entered)
  find, _searched       the inspector's search text; the search whose first match it followed
  _followed_<chart>    the point of an along-the-text chart in a fragment already followed (ui.inspector)
  _inside_sweeping     the Inside the model page's layer-by-layer curve is being made (its Stop clears it)
  _needle_stopped      the Needle page's passes a Stop ended, until Continue (ui.needle)
Results are never kept in session state: they live in the one cache (ui.cache), under keys
built from an Encoding or a Run.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field, replace

from explorer.analysis import remedies
from explorer.core.doc import Doc
from explorer.core.encoding import DEFAULT_MODEL
from explorer.mechanisms import DENSE
from ui.cache import freeze
from ui.texts import content_key

SOURCES = ("Sample", "Paste", "Upload", "Synthetic")
REPRODUCIBLE = ("Sample", "Synthetic")  # sources a link can re-create without the text itself
EVERY = -1  # Encoding.layer of a capture of every layer


@dataclass(frozen=True)
class Encoding:
    """What was encoded: a text by its content key (hashed once, when it entered), with the model,
    layer and window; or synthetic vectors by their canonical arguments.

    The text itself rides along uncompared (as a Doc rides on a Run), so the value is a cache key
    that never hashes the text again; session state keeps this value, not a dict holding the text.
    """

    text_key: str
    model: str = DEFAULT_MODEL
    layer: int = 0
    window: int = 0  # tokens per model pass, 0 for the model's maximum
    synthetic: str = ""  # canonical JSON of explorer.synthetic's arguments, "" for a text
    text: str = field(default="", compare=False, repr=False)

    @classmethod
    def of_text(cls, text: str, model: str, layer: int, window: int) -> Encoding:
        return cls(content_key(text), model, layer, window, "", text)

    @classmethod
    def of_synthetic(cls, spec: dict) -> Encoding:
        return cls("", "synthetic", 0, 0, json.dumps(spec, sort_keys=True))

    @property
    def key(self) -> str:
        """A stable name for the encoding, what the caches and the Run key on."""
        return (f"text={self.text_key}|layer={self.layer}|model={self.model}|synthetic={self.synthetic}"
                f"|window={self.window}")

    def at(self, layer: int) -> Encoding:
        """The same text and model, another layer (EVERY: the capture of every layer)."""
        return replace(self, layer=layer)

    def text_and_model(self) -> Encoding:
        """What a whole-model pass over the text depends on (Inside the model, Needle): not the layer or the
        windows the sidebar captured."""
        return replace(self, layer=0, window=0)

    def with_text(self, text: str) -> Encoding:
        """The same model, layer and window over another text (a hosted demo's first tokens)."""
        return replace(self, text_key=content_key(text), text=text)


def thaw(items: tuple) -> dict:
    """Parameters frozen by freeze, as the dict a mechanism takes (tuples back to lists)."""
    def back(v):
        return [back(x) for x in v] if isinstance(v, tuple) else v

    return {k: back(v) for k, v in items}


@dataclass(frozen=True)
class Run:
    """What a computation is about: an encoding, one head, a mechanism with its parameters, and
    the dilution remedy its queries are rescaled by (explorer.analysis.remedies; None for none).

    A plain frozen value: hashable, compared by every field but the Doc, which rides along
    uncompared, so it is the cache key. `mech` is DENSE for exact attention.
    """

    encoding: Encoding
    head: int
    mech: str = DENSE
    param_items: tuple = ()  # freeze(params)
    doc: Doc | None = field(default=None, compare=False, repr=False)
    remedy_items: tuple | None = None  # (kind, freeze(params)) or None

    @property
    def doc_key(self) -> str:
        return self.encoding.key

    @property
    def params(self) -> dict:
        return thaw(self.param_items)

    @property
    def dense(self) -> bool:
        return self.mech == DENSE

    def of(self, mech: str, params: dict | None = None) -> Run:
        """The same encoding and head, another mechanism."""
        return replace(self, mech=mech, param_items=freeze(params or {}))

    def whole_layer(self) -> Run:
        """The same run standing for every head of its layer (head 0), for results about all heads."""
        return replace(self, head=0)

    def reference(self) -> Run:
        """Exact attention on the same encoding and head."""
        return self.of(DENSE)

    @property
    def remedy(self) -> remedies.Spec:
        return None if self.remedy_items is None else (self.remedy_items[0], thaw(self.remedy_items[1]))

    def remedied(self, spec: remedies.Spec) -> Run:
        """The same run with its queries rescaled by a remedy (None: as the model computed them)."""
        return replace(self, remedy_items=(spec[0], freeze(spec[1])) if spec else None)
