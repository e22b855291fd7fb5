"""Text -> tokens (with character offsets) -> the queries, keys and values of one layer, or of
every layer from one forward pass (encode_layers), with the rule the layer attends by.

The capture reads what the model hands its attention function: models load with an
attention implementation of the explorer's own (transformers' AttentionInterface),
which records query, key and value as the model attends with them (norms and rotary
applied, partial or not, kv heads as the model keeps them) and the layer's mask,
scaling, soft-cap and learned sinks (an AttentionRule), then lets the model's own
kernel compute the output. So one capture serves every family that uses the
interface. Bloom, Falcon and MPNet compute attention inside their layers, with a
position bias of their own (ALiBi, learned relative buckets): hooks on their layers
(explorer.core.inside) hand the recorder the same things, the bias included. Any
other family that computes attention elsewhere is refused with a ValueError that
names it.

Texts longer than the model's positions go through the model in overlapping
windows; each token's row is kept from the window where it has the most context,
so nothing is truncated. Rotary models get each window's global positions
(position_ids), so Q/K come rotated at the token's place in the text; models with
learned absolute positions see window-local positions; ALiBi models carry no
position in Q/K, and their bias is applied at the Doc's own distances. Each Doc
says which pass kept each token (Doc.passes) and, on request, keeps every pass's
own q/k/v.
"""
from __future__ import annotations

import functools
import os
import sys
import threading
import time
from dataclasses import dataclass, field, replace
from functools import lru_cache

import torch
from torch import nn

from explorer.core import inside
from explorer.core.bias import ALiBi, RelativeBuckets
from explorer.core.device import check_fits, free_bytes, pick_device
from explorer.core.doc import Doc, ModelCapture, Passes
from explorer.core.rule import AttentionRule

DEFAULT_MODEL = "minilm"  # the bundled encoder (explorer.core.bundled lists every bundled model)
CAPTURE = "explorer_capture"  # the attention implementation models load with here
_MEMORY_SHARE = 0.6  # of free memory the layers' q/k/v may take (the pages' own work needs the rest)
_MASK_ROWS = 257  # evenly spaced query rows of a received mask read to check the rule (a window, a band)
OFFSET_POSITIONS = {"roberta": 2, "xlm-roberta": 2, "camembert": 2, "mpnet": 2}


class _Captured(Exception):
    """Raised once the last layer needed is recorded: skip the rest of the forward pass."""


@dataclass
class LoadedModel:
    name: str
    model: nn.Module
    tokenizer: object
    family: str  # config.model_type: what a refusal names
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    causal: bool
    max_tokens: int  # text tokens per window, special tokens excluded
    prefix: list[int]
    suffix: list[int]
    rotary: bool  # positions are rotary: windows get their global positions
    local_positions: bool  # learned absolute positions, which restart in every window
    device: torch.device
    causal_lm: nn.Module | None = None  # a causal LM's whole model, LM head included; `model` is its base
    # The recorder is per thread, but the model's forward pass is shared: one at a time.
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)


class _Recorder:
    """What the attention function received during one forward pass, for the layers asked for."""

    def __init__(self, family: str, layers: list[int]):
        self.family, self.wanted, self.calls = family, set(layers), 0
        self.qkv: dict[int, tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = {}
        self.rules: dict[int, AttentionRule] = {}

    def record(self, module, query, key, value, mask, kwargs) -> None:
        layer = getattr(module, "layer_idx", None)
        layer, self.calls = (self.calls if layer is None else layer), self.calls + 1
        if layer not in self.wanted:
            return
        self.rules[layer] = _rule(self.family, layer, module, query, mask, kwargs)
        self.qkv[layer] = (query.detach(), key.detach(), value.detach())
        if len(self.qkv) == len(self.wanted):
            raise _Captured


_ACTIVE = threading.local()  # .recorder: the _Recorder of this thread's forward pass; .swap (forward.Swap)


def _recording():
    """This thread's recorder's record, or None: what the hooks of explorer.core.inside hand calls to."""
    recorder = getattr(_ACTIVE, "recorder", None)
    return None if recorder is None else recorder.record


def _attend(module, query, key, value, attention_mask, **kwargs):
    """The attention function of models loaded here: the active recorder reads its arguments,
    then the model's own kernel computes the output, or the active swap (explorer.core.forward)
    does."""
    recorder = getattr(_ACTIVE, "recorder", None)
    if recorder is not None:
        recorder.record(module, query, key, value, attention_mask, kwargs)
    swap = getattr(_ACTIVE, "swap", None)
    if swap is not None:
        return swap.attend(module, query, key, value, attention_mask, kwargs)
    return native(module, query, key, value, attention_mask, **kwargs)


def native(module, query, key, value, attention_mask, **kwargs):
    """The model's own kernel: SDPA, or the model's eager function where the layer soft-caps or has sinks."""
    if kwargs.get("softcap") is None and kwargs.get("s_aux") is None:
        from transformers.integrations.sdpa_attention import sdpa_attention_forward

        return sdpa_attention_forward(module, query, key, value, attention_mask, **kwargs)
    # SDPA takes neither soft-caps nor sinks: the model's own eager function does, with an additive mask
    eager = sys.modules[type(module).__module__].eager_attention_forward
    return eager(module, query, key, value, _additive(module, query, key, attention_mask, kwargs), **kwargs)


def _additive(module, query, key, mask, kwargs) -> torch.Tensor:
    """The mask as eager attention adds it to the scores: 0 where allowed, the dtype's minimum elsewhere
    (SDPA's masks are boolean, or None for a plain causal layer)."""
    if mask is not None and mask.dtype != torch.bool:
        return mask
    if mask is None:
        rows, keys = (torch.arange(x.shape[2], device=query.device) for x in (query, key))
        mask = _plain_rule(module, query, kwargs).allowed(rows, keys)[None, None]
    return torch.zeros(mask.shape, dtype=query.dtype, device=query.device).masked_fill(
        ~mask, torch.finfo(query.dtype).min)


@functools.cache
def _register() -> None:
    """Make CAPTURE an attention implementation, with SDPA's masks (None when plain causal)."""
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask
    from transformers.modeling_utils import AttentionInterface

    AttentionInterface.register(CAPTURE, _attend)
    AttentionMaskInterface.register(CAPTURE, sdpa_mask)


def _rule(family: str, layer: int, module, query: torch.Tensor, mask, kwargs) -> AttentionRule:
    """The layer's AttentionRule from its attention call, checked against the mask it received."""
    if kwargs.get("position_bias") is not None:
        raise ValueError(f"{family} models add a learned position bias to their scores, which the capture does "
                         "not reproduce: pick a model without one")
    rule = _plain_rule(module, query, kwargs)
    return rule if mask is None else _check_mask(family, layer, rule, mask)


def _plain_rule(module, query: torch.Tensor, kwargs) -> AttentionRule:
    """What an attention call asks for: its scale, causality, sliding window, soft-cap, sinks and
    the position bias a layer of explorer.core.inside adds."""
    scaling = kwargs.get("scaling") or getattr(module, "scaling", None) or query.shape[-1] ** -0.5
    causal = kwargs.get("is_causal")
    sinks, softcap, window = kwargs.get("s_aux"), kwargs.get("softcap"), kwargs.get("sliding_window")
    return AttentionRule(float(scaling), bool(getattr(module, "is_causal", False) if causal is None else causal),
                         int(window) if window else None, float(softcap) if softcap else None,
                         tuple(sinks.detach().float().cpu().tolist()) if sinks is not None else None,
                         kwargs.get(inside.BIAS))


def _check_mask(family: str, layer: int, rule: AttentionRule, mask: torch.Tensor) -> AttentionRule:
    """The rule with the sliding window the mask shows (families count its edge differently), or
    ValueError unless the mask the layer received is then the rule's (a bias in it is refused too)."""
    m = mask[0, 0]
    if m.dtype != torch.bool:
        allowed = m > torch.finfo(m.dtype).min / 2
        if bool((m[allowed] != 0).any()):
            raise ValueError(f"{family} models add a position bias to the scores through the mask (as ALiBi "
                             "does), which the capture does not reproduce: pick a model without one")
        m = allowed
    rows = torch.linspace(0, m.shape[0] - 1, min(_MASK_ROWS, m.shape[0]), device=m.device).long()
    keys = torch.arange(m.shape[1], device=m.device)
    m = m[rows]
    if rule.window is not None:
        reach = ((rows[:, None] - keys[None, :]).abs() * m).amax()  # the farthest key any query sees
        if int(reach) < m.shape[1] - 1:
            rule = replace(rule, window=int(reach) + 1 if rule.causal else int(reach))
    if not torch.equal(m, rule.allowed(rows, keys)):
        raise ValueError(f"layer {layer} of this {family} model masks its attention in a way the capture cannot "
                         "describe (it knows causal, bidirectional and sliding windows)")
    return rule


def _special_ids(tokenizer) -> tuple[list[int], list[int]]:
    """The ids the tokenizer puts before and after a text ([CLS] ... [SEP], <s> ...)."""
    bare = tokenizer("word", add_special_tokens=False)["input_ids"]
    full = tokenizer("word")["input_ids"]
    for i in range(len(full) - len(bare) + 1):
        if full[i : i + len(bare)] == bare:
            return full[:i], full[i + len(bare) :]
    return [], []


_LOADING = threading.Lock()  # one load at a time: lru_cache alone would load twice for two callers at once


def load_model(name: str = DEFAULT_MODEL, device: str | None = None, allow_download: bool = False) -> LoadedModel:
    """Load a model and tokenizer: a bundled one ('minilm', 'smollm2'), a local folder or the hub cache.

    Nothing is downloaded unless `allow_download`; trust_remote_code is never enabled, so only
    architectures transformers ships load. Loaded models are kept (two at a time) and shared.
    """
    if not isinstance(name, str) or not name.strip():
        raise ValueError("model must be 'minilm', 'smollm2', a Hugging Face model id or a local checkpoint path")
    with _LOADING:
        # the device named as it resolves: load_model(m) and load_model(m, "cpu") share one copy
        return _load(name.strip(), str(pick_device(device)), bool(allow_download))


@lru_cache(maxsize=2)
def _load(name: str, device: str | None, allow_download: bool) -> LoadedModel:
    from explorer.core.bundled import is_causal, load_parts

    _register()
    local = not allow_download or os.environ.get("HF_HUB_OFFLINE") == "1"
    try:  # a causal LM with its head (for explorer.core.forward's logits); the capture runs its base
        config, tokenizer, model = load_parts(name, local_only=local, attn_implementation=CAPTURE, head=True)
    except ValueError as err:  # a family that builds its attention classes by implementation name (Falcon)
        if CAPTURE not in str(err):
            raise
        from transformers import AutoConfig

        family = AutoConfig.from_pretrained(name, local_files_only=local).model_type
        if family not in inside.FAMILIES:
            raise _outside(family) from err
        config, tokenizer, model = load_parts(name, local_only=local,
                                              attn_implementation=inside.FAMILIES[family].implementation)
    if not getattr(tokenizer, "is_fast", False):
        raise ValueError(f"model {name!r} has no fast tokenizer, which is needed for character offsets")
    if getattr(config, "is_encoder_decoder", False):
        raise ValueError(f"model {name!r} is an encoder-decoder; pick an encoder-only or decoder-only model")
    config = getattr(config, "text_config", None) or config
    causal, base = is_causal(config), model.base_model  # the hooks and the capture work on the base model
    reader = inside.install(base, config.model_type, _recording) if config.model_type in inside.FAMILIES else None
    rotary = reader.rotary if reader else any(n.endswith("rotary_emb") for n, _ in base.named_modules())
    device = pick_device(device)
    model.to(device).eval()
    heads = config.num_attention_heads
    prefix, suffix = _special_ids(tokenizer)
    max_pos = getattr(config, "max_position_embeddings", None) or 512
    max_pos -= OFFSET_POSITIONS.get(config.model_type, 0)
    return LoadedModel(
        name=name, model=base, tokenizer=tokenizer, family=config.model_type, layers=config.num_hidden_layers,
        heads=heads, kv_heads=getattr(config, "num_key_value_heads", None) or heads,
        head_dim=getattr(config, "head_dim", None) or config.hidden_size // heads,
        causal=causal, max_tokens=max_pos - len(prefix) - len(suffix), prefix=prefix, suffix=suffix,
        rotary=rotary, local_positions=reader.local_positions if reader else not rotary, device=device,
        causal_lm=model if causal and base is not model else None)


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


def _capture(lm: LoadedModel, layers: list[int], batch: torch.Tensor, positions: torch.Tensor | None):
    """Run windows [B, T] through the model until every listed layer has attended.

    Returns (layer -> (q, k, v) [B, heads or kv heads, T, d] as the attention function received
    them, layer -> AttentionRule). positions: the windows' position_ids (rotary models), or None.
    """
    recorder = _Recorder(lm.family, layers)
    extra = {} if positions is None else {"position_ids": positions}
    with lm.lock:
        _ACTIVE.recorder = recorder
        try:
            lm.model(input_ids=batch, attention_mask=torch.ones_like(batch), **extra)
        except _Captured:
            pass
        finally:
            _ACTIVE.recorder = None
    if len(recorder.qkv) != len(layers):
        raise _outside(lm.family)
    return recorder.qkv, recorder.rules


def _outside(family: str) -> ValueError:
    return ValueError(f"{family} models compute attention inside their layers, outside transformers' attention "
                      "interface, in a way the capture does not read (it reads Bloom's, Falcon's and MPNet's), so "
                      "what they attend with cannot be captured exactly; pick a model such as Llama, Qwen, Mistral, "
                      "Gemma, GPT-2, BERT, Bloom or MPNet")


def _repeat_kv(lm: LoadedModel, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor):
    """Key and value heads repeated for grouped-query attention: each serves a group of query heads."""
    if lm.kv_heads != lm.heads:
        k, v = (x.repeat_interleave(lm.heads // lm.kv_heads, dim=-3) for x in (k, v))
    return q, k, v


def _tokenize(lm: LoadedModel, text: str) -> tuple[list[int], list[tuple[int, int]]]:
    enc = lm.tokenizer(text, add_special_tokens=False, return_offsets_mapping=True, verbose=False)
    return enc["input_ids"], [tuple(o) for o in enc["offset_mapping"]]


def tokenize(text: str, model: str | LoadedModel = DEFAULT_MODEL) -> tuple[list[int], list[tuple[int, int]]]:
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
    layers = list(range(lm.layers)) if layers is None else list(layers)
    if not layers:
        raise ValueError("layers is empty: name at least one layer")
    for layer in layers:
        if isinstance(layer, bool) or not isinstance(layer, int) or not 0 <= layer < lm.layers:
            raise ValueError(f"layer={layer!r} is out of range 0..{lm.layers - 1}")
    return sorted(set(layers))


def _qkv_bytes(lm: LoadedModel, layers: int) -> int:
    """Bytes of one token's queries, keys and values in `layers` layers: every head in float32, kv heads repeated."""
    return layers * 3 * lm.heads * lm.head_dim * 4


def tokens_that_fit(model: str | LoadedModel, layers: int = 1) -> int:
    """How many text tokens' queries, keys and values of `layers` layers fit the memory encoding may take
    (windows not kept): what a refused text can be cut to."""
    lm = model if isinstance(model, LoadedModel) else load_model(model)
    fit = int(free_bytes(lm.device) * _MEMORY_SHARE) // _qkv_bytes(lm, layers)
    return max(0, fit - len(lm.prefix) - len(lm.suffix))


def _check_memory(lm: LoadedModel, n: int, layers: int, windows: int, window: int, keep_windows: bool) -> None:
    """ValueError before anything is allocated when the layers' q/k/v would not fit in free memory
    (every head's q, k, v in float32, kv heads repeated; every window whole with keep_windows)."""
    rows = n + (windows * (window + len(lm.prefix) + len(lm.suffix)) if keep_windows else 0)
    check_fits(rows * _qkv_bytes(lm, layers), lm.device,
               f"the queries, keys and values of {layers} layer(s) of this {n:,}-token text", _MEMORY_SHARE,
               "pick one layer, a shorter text or a smaller model")


def _run_passes(lm: LoadedModel, ids: list[int], plan, layers: list[int], batch: int, keep_windows: bool,
                progress) -> tuple[dict, dict[int, AttentionRule]]:
    """One windowed forward pass for every listed layer: (layer -> (q, k, v rows [heads, n, d], each
    token's from its own window, written in place; with keep_windows every window whole,
    [windows, heads, length, d]), layer -> rule). k/v keep the model's kv heads (_repeat_kv)."""
    p = len(lm.prefix)
    length = p + plan[0][1] - plan[0][0] + len(lm.suffix)
    n = length + plan[-1][0]
    heads = (lm.heads, lm.kv_heads, lm.kv_heads)
    store = {layer: ([torch.empty(h, n, lm.head_dim, device=lm.device) for h in heads],
                     [torch.empty(len(plan), h, length, lm.head_dim, device=lm.device) for h in heads]
                     if keep_windows else None) for layer in layers}
    rules = {}
    with torch.no_grad():
        for b in range(0, len(plan), batch):
            group = plan[b : b + batch]
            rows = torch.tensor([lm.prefix + ids[s:e] + lm.suffix for s, e, _, _ in group], device=lm.device)
            # a window's position t is Doc token s + t: rotary models see it there
            positions = torch.tensor([s for s, _, _, _ in group], device=lm.device)[:, None] + \
                torch.arange(length, device=lm.device) if lm.rotary else None
            got, rules = _capture(lm, layers, rows, positions)
            for layer, outs in got.items():
                kept, windows = store[layer]
                for x, out in enumerate(outs):
                    out = out.float()  # [windows, heads, length, d]
                    for j, (s, _, ks, ke) in enumerate(group):
                        lo = p + ks - s if b + j else 0
                        hi = p + ke - s if b + j < len(plan) - 1 else length
                        kept[x][:, s + lo : s + hi] = out[j, :, lo:hi]
                    if windows:
                        windows[x][b : b + len(group)] = out
            if progress:
                progress(min(b + batch, len(plan)), len(plan))
    return store, rules


def _passes(lm: LoadedModel, plan, n: int) -> Passes:
    """Which pass kept each of the n Doc tokens (prefix from the first, suffix from the last)."""
    p = len(lm.prefix)
    owner = torch.zeros(n, dtype=torch.long, device=lm.device)
    for w, (_, _, ks, ke) in enumerate(plan):
        owner[p + ks : p + ke] = w
    owner[p + plan[-1][3] :] = len(plan) - 1
    return Passes(starts=torch.tensor([s for s, _, _, _ in plan], device=lm.device), owner=owner,
                  length=p + plan[0][1] - plan[0][0] + len(lm.suffix), prefix=p, suffix=len(lm.suffix),
                  local_positions=lm.local_positions)


def encode_layers(text: str, model: str | LoadedModel = DEFAULT_MODEL, layers=None, device: str | None = None,
                  window: int | None = None, stride: int | None = None, batch: int = 8, progress=None,
                  keep_windows: bool = False) -> ModelCapture:
    """Every listed layer's Doc (all layers when None) from one windowed forward pass.

    Every listed layer is recorded in the same pass, so the model runs over the text once, not once a
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
    _check_memory(lm, len(lm.prefix) + len(ids) + len(lm.suffix), len(layers), len(plan), window, keep_windows)
    start = time.perf_counter()
    store, rules = _run_passes(lm, ids, plan, layers, batch, keep_windows, progress)
    tok = lm.tokenizer.convert_ids_to_tokens(lm.prefix + ids + lm.suffix)
    offs = [(0, 0)] * len(lm.prefix) + offsets + [(0, 0)] * len(lm.suffix)
    note = _position_note(lm, len(tok), len(ids), plan, window, stride, rules[layers[0]].bias)
    passes = _passes(lm, plan, len(tok))
    unknown = sum(i == lm.tokenizer.unk_token_id for i in ids) if lm.tokenizer.unk_token_id is not None else 0
    docs = []
    for layer in layers:
        kept, windows = store.pop(layer)  # each layer's raw rows go as its Doc is made
        q, k, v = _repeat_kv(lm, *kept)
        own = dict(zip("qkv", _repeat_kv(lm, *windows))) if windows else {}
        docs.append(Doc(text=text, tokens=tok, offsets=offs, q=q, k=k, v=v, model=lm.name, layer=layer,
                        causal=rules[layer].causal, windows=[(s, e) for s, e, _, _ in plan], timings=dict(timings),
                        note=note, passes=replace(passes, **own), rule=rules[layer], unknown=unknown))
    for doc in docs:
        doc.timings["model"] = time.perf_counter() - start
    return ModelCapture(docs)


def encode(text: str, model: str | LoadedModel = DEFAULT_MODEL, layer: int = 0, device: str | None = None,
           window: int | None = None, stride: int | None = None, batch: int = 8, progress=None,
           keep_windows: bool = False) -> Doc:
    """Queries, keys and values [heads, n, head_dim] of every head of `layer` over the whole text.

    window/stride: text tokens per model pass and the step between passes
    (defaults: the model's maximum, and three quarters of it). progress, if
    given, is called with (windows done, windows total). keep_windows: also keep
    every window's own q/k/v on doc.passes (see encode_layers).
    """
    return encode_layers(text, model, [layer], device, window, stride, batch, progress, keep_windows).docs[0]


def _position_note(lm: LoadedModel, n: int, text_tokens: int, plan, window: int, stride: int, bias) -> str:
    """What the encoding did, in words; n counts every token of the Doc (the model's special ones too),
    as every page does, and the windows are over the text's own tokens."""
    if len(plan) == 1:
        return f"{n:,} tokens in one pass: Q/K/V are exactly what the model computes."
    special = n - text_tokens
    return (f"{n:,} tokens ({text_tokens:,} of the text" + (f" and the model's {special} special ones" if special else "")
            + f") in {len(plan)} overlapping windows of {window} (stride {stride}); each token's Q/K/V "
            f"come from the window where it has the most context, and {_positions_across(lm, bias)}.")


def _positions_across(lm: LoadedModel, bias) -> str:
    """What positions mean across the windows: rotary ones are global, learned ones restart, and a bias
    added inside the layer is a function of distance, applied at the pair's distance in the whole text."""
    if lm.rotary:
        return ("rotary positions are applied at each token's global position, so distances beyond the model's "
                "training length are extrapolated")
    if isinstance(bias, ALiBi):
        rounded = ("" if bias.precision == "float32" else f"; the model computes slope × position in {bias.precision}, "
                   "so far into a long text its bias moves in coarser steps than inside one window")
        return ("Q/K carry no positions: ALiBi's bias is applied at each pair's distance in the whole text, so pairs "
                "farther apart than a window, which no pass saw together, get its linear penalty extrapolated, as "
                "ALiBi was made for" + rounded)
    restart = "position embeddings restart in every window, so the model only ever saw positions inside its window"
    if isinstance(bias, RelativeBuckets):
        return (f"{restart}; its learned relative bias is applied at each pair's distance in the whole text (from "
                f"{bias.max_distance} tokens on every distance shares the bucket the model learned for far keys)")
    return restart
