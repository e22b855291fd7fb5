"""Session state that is not a setting, and the run handle every cached computation takes.

Settings (what a person chooses: the text source, model, head, zoom, mechanism parameters,
each page's options) are declared in the settings registry (ui.settings), each next to what
owns it. Besides them st.session_state holds:
  encoded              the arguments of the last successful encoding (a dict), or absent
  _restored            set once the URL's settings were applied to this session
  _pending_settings    values from a link waiting for the page that declares them
  _refused_settings    outside values that were refused, shown once as a notice (ui.share)
  _ignored_settings    keys from a link or file that no part of the app owns, shown once
  _pending_file, _loaded     a settings file read on the last run, applied before any widget
  _zoom_dragged, _zoom_box   a box dragged on a map, applied on the next run (ui.maps)
  find                 the inspector's search text
Results are never kept in session state: they live in the one cache (ui.cache), under keys
built from a Run.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field, replace

from explorer.analysis import remedies
from explorer.core.doc import Doc
from explorer.mechanisms import DENSE

SOURCES = ("Sample", "Paste", "Upload", "Synthetic")
REPRODUCIBLE = ("Sample", "Synthetic")  # sources a link can re-create without the text itself


def text_key(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def doc_key(args: dict) -> str:
    """A stable name for an encoding (the text enters by its hash): what the caches key on."""
    parts = [f"{k}={args[k]}" for k in sorted(args) if k != "text"]
    return "|".join([f"text={text_key(args.get('text', ''))}"] + parts)


def canonical(params: dict) -> str:
    """Parameters as one canonical JSON text: the same values always give the same key."""
    return json.dumps(params, sort_keys=True)


@dataclass(frozen=True)
class Run:
    """What a computation is about: an encoding, one head, a mechanism with its parameters, and
    the dilution remedy its queries are rescaled by (explorer.analysis.remedies; "" for none).

    Hashable and compared by every field but the Doc, which rides along uncompared, so it is the
    cache key. `mech` is DENSE for exact attention.
    """

    doc_key: str
    head: int
    mech: str = DENSE
    params_json: str = "{}"
    doc: Doc | None = field(default=None, compare=False, repr=False)
    remedy_json: str = ""

    @property
    def params(self) -> dict:
        return json.loads(self.params_json)

    @property
    def dense(self) -> bool:
        return self.mech == DENSE

    def of(self, mech: str, params: dict | None = None) -> Run:
        """The same encoding and head, another mechanism."""
        return replace(self, mech=mech, params_json=canonical(params or {}))

    def reference(self) -> Run:
        """Exact attention on the same encoding and head."""
        return self.of(DENSE)

    @property
    def remedy(self) -> remedies.Spec:
        if not self.remedy_json:
            return None
        kind, params = json.loads(self.remedy_json)
        return kind, params

    def remedied(self, spec: remedies.Spec) -> Run:
        """The same run with its queries rescaled by a remedy (None: as the model computed them)."""
        return replace(self, remedy_json=json.dumps([spec[0], spec[1]], sort_keys=True) if spec else "")

    def qkv(self):
        """q, k, v of this head, [1, n, head_dim] each, the queries rescaled by the run's remedy."""
        q, k, v = self.doc.head(self.head)
        return (remedies.apply(q, self.remedy, self.doc.causal) if self.remedy_json else q), k, v
