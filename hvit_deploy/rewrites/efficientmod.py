"""EfficientMod rewrites: equal forms of the modulation, LayerScale folded away, static shapes, and the paper's
NCHW Core ML form (``docs/models.md`` "EfficientMod → Export hazards and rewrites").

The modulation ``v * ctx.repeat(1, 1, 1, r)`` (ONNX ``Tile``) has three equal forms here, selected per backend in
``export_recipes/efficientmod.yaml`` after ``benchmarks/efficientmod_forms.py`` timed them side by side:

* ``broadcast``: the value's r·C channels viewed as (r, C) and multiplied by the context broadcast over r, then
  flattened back: no copy of the context at all (the "Reshape" interaction of the paper's §3.4). Repeat lays
  its copies out as [c0..cC-1] r times, so value channel ``j*C + c`` meets context channel ``c`` in both forms.
* ``expand``: the context broadcast to (…, r, C) (``expand``/``broadcast_to``) and flattened: the same memory as
  repeat, built with ONNX ``Expand`` instead of ``Tile``.
* ``tiled``: ``g``'s rows tiled r times, so the context layer emits r·C channels directly and the modulation is
  a plain multiply; costs (r-1)·C² more MACs per pixel.

Measured with ``benchmarks/efficientmod_forms.py`` (batch 1, 1 thread, forms interleaved; 2-core shared Xeon VM,
so noisy: per-round ratios to repeat, median and interquartile range; all forms after the LayerScale fold,
explicit attention and static shapes):

| model, backend        | broadcast            | expand               | tiled                | nchw (+broadcast)    |
|-----------------------|----------------------|----------------------|----------------------|----------------------|
| s, ORT (run A)        | 0.995                | 1.015                | 1.075                | 1.034                |
| s, ORT (run B)        | 1.018 (0.87-1.11)    | 1.026 (0.92-1.11)    | 1.056 (0.98-1.22)    | 1.031 (0.95-1.18)    |
| xxs, ORT              | 0.955 (0.93-0.99)    | 0.994 (0.96-1.04)    | 1.096 (1.06-1.15)    | 1.013 (0.98-1.06)    |
| s, OpenVINO (run A)   | 0.958                | 0.982                | 1.046                | 1.124                |
| s, OpenVINO (run B)   | 0.913 (0.88-0.95)    | 0.980 (0.93-1.02)    | 1.027 (0.98-1.12)    | 1.150 (1.08-1.24)    |
| xxs, OpenVINO         | 0.938 (0.74-1.15)    | 1.030 (0.94-1.19)    | 1.061 (0.82-1.27)    | 1.104 (0.77-1.46)    |

So the paper's finding (§3.4: a reshape interaction 21.8% slower than repeat on CPU) does not hold for these
runtimes: broadcast is as fast as repeat on ONNX Runtime (lowest median latency in every run, within noise) and
3-9% faster on OpenVINO; tiling ``g`` is slower (3-10%) and the NCHW form is 10-15% slower on OpenVINO's CPU
plugin, so the recipes use broadcast for ONNX and OpenVINO and keep NCHW for Core ML, where the paper measured
the permutes as the cost (not timed here: Core ML does not run on Linux).

Every rewritten class is a subclass of the model's own, with the same parameters and keys (``tiled`` and
``nchw`` change shapes of ``g``/Linear weights, nothing else).
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..errors import RewriteError
from ..models.efficientmod import (
    Attention,
    AttentionBlock,
    BasicBlock,
    ContextLayer,
    EfficientMod,
    Mlp,
    PatchEmbed,
)
from .base import register_rewrite, replace_module, swap_class

FAMILY = ("efficientmod",)
FORMS = ("repeat", "broadcast", "expand", "tiled")


# ------------------------------------------------------------------------------------------ rewritten modules

class ModulationMlp(Mlp):
    """The EfficientMod MLP with a chosen modulation ``form``, ``layout`` ("nhwc" as the official code, or "nchw")
    and, once ``efficientmod.static_shapes`` has run, a fixed ``static_shape`` (B, H, W)."""

    form = "repeat"
    layout = "nhwc"
    static_shape: tuple[int, int, int] | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ctx = self.context_layer(x)
        v = self.fc1(x)
        if not self.expand_dim:
            return self.fc2(v * ctx)
        v = self.drop(self.act(v))
        return self.fc2(self._modulate(v, ctx))

    def _modulate(self, v: torch.Tensor, ctx: torch.Tensor) -> torch.Tensor:
        r, c = self.expansion, self.dim
        nchw = self.layout == "nchw"
        if self.form == "tiled":  # the context layer already emits r·C channels
            return v * ctx
        if self.form == "repeat":
            return v * (ctx.repeat(1, r, 1, 1) if nchw else ctx.repeat(1, 1, 1, r))
        if self.static_shape is not None:
            b, h, w = self.static_shape
            split, one, flat = (((b, r, c, h, w), (b, 1, c, h, w), (b, r * c, h, w)) if nchw else
                                ((b, h, w, r, c), (b, h, w, 1, c), (b, h, w, r * c)))
            if self.form == "broadcast":
                return (v.reshape(split) * ctx.reshape(one)).reshape(flat)
            return v * ctx.reshape(one).expand(split).reshape(flat)
        # no static shape: the same without reading any size
        axis = 1 if nchw else -1
        if self.form == "broadcast":
            out = v.unflatten(axis, (r, c)) * ctx.unsqueeze(1 if nchw else -2)
            return out.flatten(1, 2) if nchw else out.flatten(-2)
        if nchw:
            return v * ctx.unsqueeze(1).expand(-1, r, -1, -1, -1).flatten(1, 2)
        return v * ctx.unsqueeze(-2).expand(-1, -1, -1, r, -1).flatten(-2)


class StaticAttentionBlock(AttentionBlock):
    """AttentionBlock with (B, H, W, C) fixed at rewrite time: no ``x.shape`` reads, so no ``aten::Int``."""

    static_shape: tuple[int, int, int, int]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, h, w, c = self.static_shape
        x = x.reshape(b, h * w, c)
        x = x + self.drop_path1(self.attn(self.norm1(x)))
        x = x + self.drop_path2(self.mlp(self.norm2(x)))
        return x.reshape(b, h, w, c)


class StaticAttention(Attention):
    """Attention with (B, N) fixed at rewrite time."""

    static_shape: tuple[int, int]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n = self.static_shape
        qkv = self.qkv(x).reshape(b, n, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        x = self._attend(q, k, v).transpose(1, 2).reshape(b, n, self.num_heads * self.head_dim)
        return self.proj_drop(self.proj(x))


# --- NCHW (the paper's Core ML form, App. J): 1x1 convolutions instead of permute + Linear

class ChannelLayerNorm(nn.LayerNorm):
    """LayerNorm over dim 1 of an NCHW tensor, written out (mean, variance, scale, shift); same parameters.
    Not bit-identical to ``F.layer_norm`` on channels-last data (different summation order, rsqrt).

    Written as ``(x - mean) * rsqrt(mean((x - mean)²) + eps)`` so that coremltools' ``fuse_layernorm_or_
    instancenorm`` pass (its BC1S pattern, axes [1] on rank 4) turns it back into one ``layer_norm`` op."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        d = x - x.mean(1, keepdim=True)
        x = d * torch.rsqrt((d * d).mean(1, keepdim=True) + self.eps)
        return x * self.weight[:, None, None] + self.bias[:, None, None]


class NchwPatchEmbed(PatchEmbed):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.proj(x)
        return self.norm(x) if self.norm is not None else x


class NchwContextLayer(ContextLayer):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.f(x)
        out = 0
        for conv in self.context_list:
            out = out + self.act(conv(x))
        return self.g(out)


class NchwBasicBlock(BasicBlock):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.mlp(self.norm(x))
        if self.gamma_1 is not None:
            y = self.gamma_1[:, None, None] * y
        return x + self.drop_path(y)


class NchwAttention(Attention):
    """Attention on (B, C, H, W) with 1x1-conv qkv/proj; heads laid out (B, heads, head_dim, N), so no permute."""

    static_shape: tuple[int, int, int, int]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, _, h, w = self.static_shape
        n, nh, hd = h * w, self.num_heads, self.head_dim
        q, k, v = self.qkv(x).reshape(b, 3, nh, hd, n).unbind(1)
        if self.fused_attn:
            out = F.scaled_dot_product_attention(
                q.transpose(-2, -1), k.transpose(-2, -1), v.transpose(-2, -1),
                dropout_p=self.attn_drop.p if self.training else 0.).transpose(-2, -1)
        else:
            attn = (q * self.scale).transpose(-2, -1) @ k          # (b, nh, n, n)
            attn = self.attn_drop(attn.softmax(dim=-1))
            out = v @ attn.transpose(-2, -1)                        # (b, nh, hd, n)
        return self.proj_drop(self.proj(out.reshape(b, nh * hd, h, w)))


class NchwAttentionBlock(AttentionBlock):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop_path1(self.attn(self.norm1(x)))
        return x + self.drop_path2(self.mlp(self.norm2(x)))


class NchwEfficientMod(EfficientMod):
    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(x)
        for layer in self.layers:
            x = layer(x)
        return self.norm(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = torch.flatten(self.avgpool(x), 1)
        return x if pre_logits else self.head(x)


# ------------------------------------------------------------------------------------------------ helpers

def _efficientmod(model: nn.Module) -> EfficientMod:
    if not isinstance(model, EfficientMod):
        raise RewriteError(f"EfficientMod rewrites need an EfficientMod model, not {type(model).__name__}")
    return model


def _as_modulation_mlp(m: Mlp) -> ModulationMlp:
    if not isinstance(m, ModulationMlp):
        swap_class(m, ModulationMlp)
    return m


def _set_form(model: nn.Module, form: str) -> int:
    count = 0
    for m in _efficientmod(model).modules():
        if isinstance(m, Mlp) and m.expand_dim:
            mlp = _as_modulation_mlp(m)
            if mlp.form == "tiled" and form != "tiled":
                raise RewriteError(f"{form!r} modulation cannot follow efficientmod.tiled_context")
            mlp.form = form
            count += 1
    return count


def _is_nchw(model: EfficientMod) -> bool:
    return isinstance(model, NchwEfficientMod)


def _conv1x1(linear: nn.Linear) -> nn.Conv2d:
    conv = nn.Conv2d(linear.in_features, linear.out_features, 1, bias=linear.bias is not None)
    conv = conv.to(device=linear.weight.device, dtype=linear.weight.dtype)
    with torch.no_grad():
        conv.weight.copy_(linear.weight[:, :, None, None])
        if linear.bias is not None:
            conv.bias.copy_(linear.bias)
    return conv


# ---------------------------------------------------------------------------------------------- rewrites

@register_rewrite("efficientmod.broadcast_modulation", families=FAMILY, exact=True,
                  description="ctx.repeat(r) as a broadcast: value viewed as (r, C) times ctx (no Tile, no copy)")
def broadcast_modulation(model: nn.Module, ctx) -> int:
    """``v * ctx.repeat(1,1,1,r)`` → ``(v.view(…, r, C) * ctx.view(…, 1, C)).view(…, r·C)``: the same products,
    bit for bit, without materialising the r copies of the context."""
    return _set_form(model, "broadcast")


@register_rewrite("efficientmod.expand_modulation", families=FAMILY, exact=True,
                  description="ctx.repeat(r) as ctx broadcast_to (…, r, C) then flattened (Expand instead of Tile)")
def expand_modulation(model: nn.Module, ctx) -> int:
    return _set_form(model, "expand")


@register_rewrite("efficientmod.tiled_context", families=FAMILY, exact=False,
                  description="g's rows tiled r times so the context layer emits r·C channels (no repeat)")
def tiled_context(model: nn.Module, ctx) -> int:
    """``g(z).repeat(r)`` = ``g_r(z)`` with ``g_r``'s weight and bias the r-fold stack of ``g``'s: the context
    arrives at the value's width and the modulation is a plain multiply. Equal up to the rounding of the larger
    matmul kernel; costs (r-1)·C² more MACs per pixel."""
    count = 0
    for name, m in _efficientmod(model).named_modules():
        if not (isinstance(m, Mlp) and m.expand_dim):
            continue
        mlp = _as_modulation_mlp(m)
        if mlp.form == "tiled":
            continue
        g, r = mlp.context_layer.g, mlp.expansion
        with torch.no_grad():
            if isinstance(g, nn.Conv2d):
                new = nn.Conv2d(g.in_channels, g.out_channels * r, 1).to(g.weight)
                new.weight.copy_(g.weight.repeat(r, 1, 1, 1))
            else:
                new = nn.Linear(g.in_features, g.out_features * r).to(g.weight)
                new.weight.copy_(g.weight.repeat(r, 1))
            new.bias.copy_(g.bias.repeat(r))
        mlp.context_layer.g = new
        mlp.form = "tiled"
        count += 1
    return count


@register_rewrite("efficientmod.fold_layerscale", families=FAMILY, exact=False,
                  description="gamma_1 folded into fc2 (rows of W scaled by gamma, b*gamma)")
def fold_layerscale(model: nn.Module, ctx) -> int:
    """``x + γ ⊙ fc2(h)`` = ``x + fc2'(h)`` with ``W' = diag(γ)·W`` and ``b' = γ ⊙ b``: one Mul per block less."""
    count = 0
    for m in _efficientmod(model).modules():
        if isinstance(m, BasicBlock) and m.gamma_1 is not None:
            gamma, fc2 = m.gamma_1.detach(), m.mlp.fc2
            with torch.no_grad():
                fc2.weight.mul_(gamma.reshape((-1,) + (1,) * (fc2.weight.dim() - 1)))
                fc2.bias.mul_(gamma)
            m.register_parameter("gamma_1", None)
            count += 1
    return count


@register_rewrite("efficientmod.static_shapes", families=FAMILY, exact=True, batch="dynamic",
                  description="B, H, W, N as Python ints from one probe pass (no x.size() reads, no aten::Int)")
def static_shapes(model: nn.Module, ctx) -> int:
    """The attention blocks read ``B, H, W, C = x.size()``; traced, that shape arithmetic leaves ``aten::Int``
    nodes which coremltools cannot convert. Fix B, H, W, N at the export shape instead. The modulation MLPs get
    their (B, H, W) too, so the broadcast/expand forms reshape to constants."""
    model = _efficientmod(model)
    records = ctx.probe(model)
    nchw = _is_nchw(model)
    count = 0
    for name, m in model.named_modules():
        rec = records.get(name)
        if rec is None:
            continue
        shape = (ctx.batch_dim(rec.args[0][0]),) + tuple(rec.args[0][1:])  # b only leads reshapes / expands
        if isinstance(m, Mlp) and m.expand_dim:
            mlp = _as_modulation_mlp(m)
            mlp.static_shape = (shape[0], shape[2], shape[3]) if nchw else tuple(shape[:3])
            count += 1
        elif isinstance(m, AttentionBlock) and not isinstance(m, NchwAttentionBlock):
            swap_class(m, StaticAttentionBlock)
            m.static_shape = tuple(shape)
            count += 1
        elif isinstance(m, Attention) and not isinstance(m, NchwAttention):
            swap_class(m, StaticAttention)
            m.static_shape = tuple(shape[:2])
            count += 1
    return count


@register_rewrite("efficientmod.nchw", families=FAMILY, exact=False, batch="dynamic",
                  description="NCHW throughout, Linear as 1x1 conv, channel LayerNorm by hand (paper App. J, Core ML)")
def nchw(model: nn.Module, ctx) -> int:
    """The paper's Core ML form: no permute at all. Every Linear inside the stages becomes a 1x1 convolution
    (weight ``[out, in, 1, 1]``, exact), every LayerNorm a channel LayerNorm over dim 1 written out (equal up to
    float rounding, about 1e-6 on the logits), attention keeps its heads as (B, heads, head_dim, N). Shapes are
    fixed at the export resolution (the attention needs H and W to fold tokens back)."""
    model = _efficientmod(model)
    if _is_nchw(model):
        return 0
    records = ctx.probe(model)
    count = 0
    for name, m in list(model.named_modules()):
        if isinstance(m, nn.Linear) and name.startswith("layers."):
            replace_module(model, name, _conv1x1(m))
            count += 1
    for name, m in list(model.named_modules()):
        if isinstance(m, nn.LayerNorm):
            swap_class(m, ChannelLayerNorm)
        elif isinstance(m, PatchEmbed):
            swap_class(m, NchwPatchEmbed)
        elif isinstance(m, ContextLayer):
            swap_class(m, NchwContextLayer)
        elif isinstance(m, Mlp):
            mlp = _as_modulation_mlp(m)
            mlp.layout = "nchw"
            b, h, w, _ = records[name].args[0]
            mlp.static_shape = (ctx.batch_dim(b), h, w)
        elif isinstance(m, BasicBlock):
            swap_class(m, NchwBasicBlock)
        elif isinstance(m, AttentionBlock):
            b, h, w, c = records[name].args[0]
            swap_class(m, NchwAttentionBlock)
            swap_class(m.attn, NchwAttention)
            m.attn.static_shape = (ctx.batch_dim(b), c, h, w)
    swap_class(model, NchwEfficientMod)
    return count
