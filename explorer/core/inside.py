"""The capture of families whose layers compute attention themselves, outside transformers'
attention interface: Bloom and Falcon (ALiBi; Falcon's rotary models too) and MPNet (learned
relative-position buckets).

Hooks on every attention module read what the layer computes with: the outputs of its query,
key and value projections, split into heads by the layer's own code (and rotated by its own
rotary code), and the bias and mask the layer is given. The bias joins the layer's rule
(explorer.core.bias) only once it is rebuilt from its parameters and found equal to the
tensor the layer received, so a layer that adds anything else is refused, never shown wrong.
The hooks hand the capture (module, q, k, v, mask, kwargs), as the attention interface
does: kwargs carry the scale, the causality and the bias (under BIAS).

Falcon loads with SDPA, the path its forward takes: in transformers 5.23 its eager path
(output_attentions=True) adds the ALiBi bias twice, once to the scores and once in the mask
it folds the bias into; SDPA adds it once, as the original Falcon code does.
"""
from __future__ import annotations

import math
import sys
from typing import Callable

import torch
from torch import nn

from explorer.core.bias import ALiBi, RelativeBuckets

BIAS = "explorer_bias"  # the kwarg that carries a layer's position bias to the recorder
Record = Callable[..., None]  # record(module, query, key, value, mask, kwargs), as the interface calls it


def _heads(x: torch.Tensor, head_dim: int) -> torch.Tensor:
    """[batch, T, heads * head_dim] -> [batch, heads, T, head_dim], as the layers view their projections."""
    return x.view(*x.shape[:2], -1, head_dim).transpose(1, 2)


def _refuse(family: str, module, what: str) -> ValueError:
    layer = getattr(module, "layer_idx", None)
    where = "a layer" if layer is None else f"layer {layer}"
    return ValueError(f"{where} of this {family} model {what}, which the capture does not reproduce: "
                      "pick another model")


def read_alibi(family: str, module, term: torch.Tensor, scale: float, precision: str) -> ALiBi:
    """The ALiBi a layer received as slope x key position [heads, T]: the slopes the family's own
    build_alibi_tensor gives (at position 1), then the received row rebuilt from them, bit for bit
    (to the model's dtype, when it stores the term in half precision)."""
    build = sys.modules[type(module).__module__].build_alibi_tensor
    ones = torch.ones(1, 2, dtype=torch.long, device=term.device)  # a mask as the model gets it
    bias = ALiBi(tuple(build(ones, term.shape[0], torch.float32).view(-1, 2)[:, 1].tolist()), scale, precision)
    rebuilt = bias.position_term(torch.arange(term.shape[-1], device=term.device), term.dtype)
    if not torch.allclose(rebuilt, term, rtol=torch.finfo(term.dtype).eps, atol=0):
        raise _refuse(family, module, "adds a bias that is not slope × position")
    return bias


class Family:
    """How one family's attention modules are read. `implementation`: the attention implementation
    the family loads with (the path its forward takes, so the capture reads what that path adds)."""

    name = ""
    implementation = "eager"
    projections: tuple[str, ...] = ()  # the submodules whose outputs hold the layer's q, k, v

    def __init__(self, model: nn.Module):
        self.model, self.config = model, model.config

    def modules(self) -> list[nn.Module]:
        """The attention modules, in layer order."""
        raise NotImplementedError

    def read(self, module, seen: dict, args: tuple, kwargs: dict):
        """(q, k, v [batch, heads, T, d], the mask, kwargs for the recorder) of one attention call."""
        raise NotImplementedError

    @property
    def rotary(self) -> bool:
        """Positions enter as rotary q/k: windows get their global position ids."""
        return False

    @property
    def local_positions(self) -> bool:
        """Learned absolute positions that restart in every window."""
        return False


class Bloom(Family):
    """BloomAttention: alibi.baddbmm(q, k^T, beta, alpha): ALiBi as is (beta 1) plus q . k / sqrt(d);
    slope x position in float32 (modeling_bloom.build_alibi_tensor)."""

    name, projections = "bloom", ("query_key_value",)

    def modules(self):
        return [block.self_attention for block in self.model.h]

    def read(self, module, seen, args, kwargs):
        q, k, v = module._reshape(seen["query_key_value"])
        alibi = kwargs["alibi"]  # [batch * heads, 1, T]
        term = alibi.view(-1, module.num_heads, alibi.shape[-1])[0]
        bias = read_alibi(self.name, module, term, float(module.beta), "float32")
        return q, k, v, kwargs["attention_mask"], {"scaling": module.inv_norm_factor, "is_causal": True, BIAS: bias}


class Falcon(Family):
    """FalconAttention, on its SDPA path: ALiBi folded into the mask as slope x position / sqrt(d),
    slope x position built in bfloat16, positions too (modeling_falcon.build_alibi_tensor); or rotary q/k."""

    name, implementation, projections = "falcon", "sdpa", ("query_key_value",)

    def modules(self):
        return [layer.self_attention for layer in self.model.h]

    @property
    def rotary(self):
        return not self.config.alibi

    def read(self, module, seen, args, kwargs):
        q, k, v = (x.transpose(1, 2) for x in module._split_heads(seen["query_key_value"]))
        k, v = (x.repeat_interleave(module.num_heads // x.shape[1], dim=1) for x in (k, v))  # multi-query
        mask, alibi = kwargs["attention_mask"], kwargs.get("alibi")
        call = {"scaling": module.inv_norm_factor, "is_causal": True}
        if alibi is None:
            cos, sin = kwargs["position_embeddings"]
            q, k = sys.modules[type(module).__module__].apply_rotary_pos_emb(q, k, cos, sin)
            return q, k, v, mask, call
        bias = read_alibi(self.name, module, alibi[0, :, 0], 1 / math.sqrt(module.head_dim), "bfloat16")
        return q, k, v, self._unbiased(module, mask, bias), {**call, BIAS: bias}

    def _unbiased(self, module, mask: torch.Tensor, bias: ALiBi) -> torch.Tensor:
        """The boolean mask [1, heads, T, T] under the bias folded into it, checked to be that bias."""
        allowed = mask[:1] > torch.finfo(mask.dtype).min / 2
        folded = bias.position_term(torch.arange(mask.shape[-1], device=mask.device), mask.dtype) * bias.scale
        folded = folded[:, None, :].expand_as(allowed[0])  # in the model's dtype: it divides, this multiplies
        if not torch.allclose(mask[0][allowed[0]], folded[allowed[0]], rtol=torch.finfo(mask.dtype).eps, atol=0):
            raise _refuse(self.name, module, "folds into its mask a bias that is not its ALiBi")
        return allowed


class MPNet(Family):
    """MPNetSelfAttention: q . k / sqrt(d) + position_bias, one table of T5-style buckets for every
    layer (MPNetEncoder.relative_attention_bias: 32 buckets, max distance 128, both directions)."""

    name, projections = "mpnet", ("q", "k", "v")
    BUCKETS, MAX_DISTANCE = 32, 128  # MPNetEncoder.compute_position_bias and relative_position_bucket

    def modules(self):
        return [layer.attention.attn for layer in self.model.encoder.layer]

    @property
    def local_positions(self):
        return True

    def read(self, module, seen, args, kwargs):
        d = module.attention_head_size
        q, k, v = (_heads(seen[name], d) for name in self.projections)
        mask = args[1] if len(args) > 1 else kwargs.get("attention_mask")
        received = args[2] if len(args) > 2 else kwargs.get("position_bias")
        bias = self.bias()
        t = torch.arange(q.shape[2], device=q.device)
        if received is None or not torch.equal(bias.values(t[None, :] - t[:, None], received.dtype), received[0]):
            raise _refuse(self.name, module, "adds a position bias other than its table of relative buckets")
        return q, k, v, mask, {"scaling": 1 / math.sqrt(d), "is_causal": False, BIAS: bias}

    def bias(self) -> RelativeBuckets:
        table = self.model.encoder.relative_attention_bias.weight[: self.BUCKETS].detach().float()
        return RelativeBuckets(tuple(map(tuple, table.T.tolist())), self.MAX_DISTANCE, True, "MPNet")


FAMILIES: dict[str, type[Family]] = {f.name: f for f in (Bloom, Falcon, MPNet)}


def install(model: nn.Module, family: str, recording: Callable[[], Record | None]) -> Family:
    """Hooks on every attention module of a loaded model of `family` (a key of FAMILIES) that hand
    each attention call to recording() (this thread's recorder, or None: then they do nothing)."""
    reader = FAMILIES[family](model)
    # Bloom and MPNet load with the capture's implementation name, which they ignore but their mask
    # function reads (SDPA's masks: None or boolean, which their layers would add as numbers): the
    # family's own. transformers refuses set_attn_implementation for layers outside the interface.
    model.config._attn_implementation = reader.implementation
    for module in reader.modules():
        seen: dict[str, torch.Tensor] = {}
        for name in reader.projections:
            getattr(module, name).register_forward_hook(
                lambda _m, _i, out, name=name, seen=seen: seen.__setitem__(name, out) if recording() else None)
        module.register_forward_hook(
            lambda m, args, kwargs, _out, seen=seen: _hand_over(reader, m, seen, args, kwargs, recording()),
            with_kwargs=True)
    return reader


def _hand_over(reader: Family, module, seen: dict, args, kwargs, record: Record | None) -> None:
    if record is None or not seen:
        return
    q, k, v, mask, call = reader.read(module, dict(seen), args, kwargs)
    seen.clear()
    record(module, q, k, v, mask, call)
