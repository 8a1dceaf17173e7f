"""EfficientMod (Ma et al., "Efficient Modulation for Vision Networks", ICLR 2024).

Written for hvit-deploy after the official ``models/EfficientMod.py`` (ma-xu/EfficientMod): the same module and
parameter names, so the released checkpoints load by their own keys, and the same maths, so they give the same
numbers. Facts and hazards: ``docs/models.md`` "EfficientMod".

| canonical           | official fn          | dims            | (mod, attn) blocks per stage     | r      | att_ratio | params     |
|---------------------|----------------------|-----------------|----------------------------------|--------|-----------|------------|
| efficientmod_xxs    | efficientMod_xxs     | 32,64,128,256   | (2,0) (2,0) (6,1) (2,2)          | 1,6,.. | 4         |  4,736,264 |
| efficientmod_xs     | efficientMod_xs      | 32,64,144,288   | (3,0) (3,0) (4,3) (2,3)          | 1,4,.. | 4         |  6,627,544 |
| efficientmod_s      | efficientMod_s       | 32,64,144,312   | (4,0) (4,0) (8,4) (4,4)          | 1,6,.. | 4,4,4,5   | 12,897,184 |
| efficientmod_s_conv | efficientMod_s_Conv  | 40,80,160,344   | (4,0) (4,0) (12,0) (8,0)         | 1,6,.. | -         | 12,872,336 |

The architecture, as the official code has it:

* The whole network runs **channels-last** (B, H, W, C): every convolution is wrapped in permutes.
* Stem: 7x7 stride-4 conv + LayerNorm; between stages a 3x3 stride-2 conv + LayerNorm. Every LayerNorm has the
  PyTorch default eps 1e-5.
* Modulation block: ``x + gamma_1 * Mlp(LN(x))`` with ``Mlp(x) = fc2(act(fc1(x)) * ctx.repeat(r))`` and
  ``ctx = g(GELU(dwconv7x7(f(x))))``. The expansion r alternates 1, r_max within a stage; an r=1 block has **no**
  activation after ``fc1`` and multiplies by ``ctx`` directly. LayerScale (``gamma_1``, init 1e-4) on every one.
* Attention blocks (stages 3-4) follow the modulation blocks of their stage and continue its numbering: 8 heads of
  width ``max(dim // 8, 32)`` (so qkv is 768/864/936 wide, possibly more than 3·dim), qkv without bias, no
  LayerScale, MLP ratio ``att_ratio``; global attention over all tokens, no position embedding.
* Head: LayerNorm, global average pool, Linear.

The official Attention calls ``F.scaled_dot_product_attention`` whenever it exists; here that is the
``fused_attn`` flag (timm's convention), which the ``explicit_attention`` rewrite turns off.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.layers import DropPath, trunc_normal_, use_fused_attn

from ..registry import register_model

__all__ = ["EfficientMod", "efficientmod_xxs", "efficientmod_xs", "efficientmod_s", "efficientmod_s_conv"]


def _alternate(depth: int, r_max: int) -> list[int]:
    """Expansion ratios of a stage's modulation blocks: 1, r_max, 1, r_max, ..."""
    return [1 if i % 2 == 0 else r_max for i in range(depth)]


# depths: modulation blocks per stage; attn_depths: attention blocks appended to each stage.
_CFGS = {
    "efficientmod_xxs": dict(embed_dims=(32, 64, 128, 256), depths=(2, 2, 6, 2), attn_depths=(0, 0, 1, 2),
                             r_max=6, att_ratios=(4, 4, 4, 4)),
    "efficientmod_xs": dict(embed_dims=(32, 64, 144, 288), depths=(3, 3, 4, 2), attn_depths=(0, 0, 3, 3),
                            r_max=4, att_ratios=(4, 4, 4, 4)),
    "efficientmod_s": dict(embed_dims=(32, 64, 144, 312), depths=(4, 4, 8, 4), attn_depths=(0, 0, 4, 4),
                           r_max=6, att_ratios=(4, 4, 4, 5)),
    "efficientmod_s_conv": dict(embed_dims=(40, 80, 160, 344), depths=(4, 4, 12, 8), attn_depths=(0, 0, 0, 0),
                                r_max=6, att_ratios=(4, 4, 4, 4)),
}


def _nchw(x: torch.Tensor) -> torch.Tensor:
    return x.permute(0, 3, 1, 2).contiguous()


def _nhwc(x: torch.Tensor) -> torch.Tensor:
    return x.permute(0, 2, 3, 1).contiguous()


class PatchEmbed(nn.Module):
    """Strided conv + LayerNorm; channels-last in and out (the conv itself runs in NCHW)."""

    def __init__(self, in_chans: int, embed_dim: int, patch_size: int, stride: int, padding: int, norm: bool = True):
        super().__init__()
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=stride, padding=padding)
        self.norm = nn.LayerNorm(embed_dim) if norm else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = _nhwc(self.proj(_nchw(x)))
        if self.norm is not None:
            x = self.norm(x)
        return x


class ContextLayer(nn.Module):
    """``g(sum_k act(dwconv_k(f(x))))``: the context that modulates the value branch (channels-last)."""

    def __init__(self, dim: int, kernel_sizes=(7,), act_layer=nn.GELU):
        super().__init__()
        self.f = nn.Linear(dim, dim)
        self.g = nn.Linear(dim, dim)
        self.act = act_layer()
        self.context_list = nn.ModuleList(
            nn.Conv2d(dim, dim, k, padding=k // 2, groups=dim) for k in kernel_sizes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = _nchw(self.f(x))
        out = 0
        for conv in self.context_list:
            out = out + self.act(conv(x))
        return self.g(_nhwc(out))


class Mlp(nn.Module):
    """The EfficientMod MLP: the value ``fc1(x)`` (width r·C) modulated by the context, then ``fc2``.

    With r > 1 the value goes through GELU and the context is repeated r times along channels (channel
    ``j*C + c`` of the value meets context channel ``c``); with r == 1 there is no activation at all.
    """

    def __init__(self, dim: int, expansion: int, kernel_sizes=(7,), act_layer=nn.GELU, drop: float = 0.):
        super().__init__()
        self.dim = dim
        self.expansion = int(expansion)
        self.expand_dim = self.expansion != 1
        self.fc1 = nn.Linear(dim, dim * self.expansion)
        self.context_layer = ContextLayer(dim, kernel_sizes, act_layer)
        self.fc2 = nn.Linear(dim * self.expansion, dim)
        if self.expand_dim:
            self.act = act_layer()
            self.drop = nn.Dropout(drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ctx = self.context_layer(x)
        v = self.fc1(x)
        if self.expand_dim:
            v = self.drop(self.act(v))
            v = v * ctx.repeat(1, 1, 1, self.expansion)
        else:
            v = v * ctx
        return self.fc2(v)


class BasicBlock(nn.Module):
    """Modulation block: ``x + gamma_1 * mlp(norm(x))`` (channels-last)."""

    def __init__(self, dim: int, expansion: int, kernel_sizes=(7,), drop: float = 0., drop_path: float = 0.,
                 layerscale_value: float | None = 1e-4, act_layer=nn.GELU):
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, expansion, kernel_sizes, act_layer, drop)
        self.drop_path = DropPath(drop_path) if drop_path > 0. else nn.Identity()
        if layerscale_value is not None:
            self.gamma_1 = nn.Parameter(layerscale_value * torch.ones(dim))
        else:
            self.register_parameter("gamma_1", None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.mlp(self.norm(x))
        if self.gamma_1 is not None:
            y = self.gamma_1 * y
        return x + self.drop_path(y)


class Attention(nn.Module):
    """Multi-head self-attention over (B, N, C) tokens; heads are ``max(dim // num_heads, 32)`` wide."""

    def __init__(self, dim: int, num_heads: int = 8, qkv_bias: bool = False, attn_drop: float = 0.,
                 proj_drop: float = 0.):
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = max(dim // num_heads, 32)
        self.scale = self.head_dim ** -0.5
        self.fused_attn = use_fused_attn()
        inner = self.num_heads * self.head_dim
        self.qkv = nn.Linear(dim, inner * 3, bias=qkv_bias)
        self.attn_drop = nn.Dropout(attn_drop)
        self.proj = nn.Linear(inner, dim)
        self.proj_drop = nn.Dropout(proj_drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, N, _ = x.shape
        qkv = self.qkv(x).reshape(B, N, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        x = self._attend(q, k, v)
        x = x.transpose(1, 2).reshape(B, N, self.num_heads * self.head_dim)
        return self.proj_drop(self.proj(x))

    def _attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        if self.fused_attn:
            return F.scaled_dot_product_attention(q, k, v, dropout_p=self.attn_drop.p if self.training else 0.)
        attn = (q * self.scale) @ k.transpose(-2, -1)
        attn = self.attn_drop(attn.softmax(dim=-1))
        return attn @ v


class AttMlp(nn.Module):
    """fc1 → GELU → fc2 (the attention blocks' MLP)."""

    def __init__(self, dim: int, hidden: int, act_layer=nn.GELU, drop: float = 0.):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = act_layer()
        self.fc2 = nn.Linear(hidden, dim)
        self.drop = nn.Dropout(drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(self.fc2(self.drop(self.act(self.fc1(x)))))


class AttentionBlock(nn.Module):
    """Pre-norm transformer block on the flattened token grid; takes and returns (B, H, W, C)."""

    def __init__(self, dim: int, att_ratio: float = 4., num_heads: int = 8, drop: float = 0., attn_drop: float = 0.,
                 drop_path: float = 0., act_layer=nn.GELU):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = Attention(dim, num_heads=num_heads, attn_drop=attn_drop, proj_drop=drop)
        self.drop_path1 = DropPath(drop_path) if drop_path > 0. else nn.Identity()
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = AttMlp(dim, int(dim * att_ratio), act_layer, drop)
        self.drop_path2 = DropPath(drop_path) if drop_path > 0. else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, H, W, C = x.shape
        x = x.reshape(B, H * W, C)
        x = x + self.drop_path1(self.attn(self.norm1(x)))
        x = x + self.drop_path2(self.mlp(self.norm2(x)))
        return x.reshape(B, H, W, C)


class BasicLayer(nn.Module):
    """One stage: modulation blocks, then attention blocks, then (except the last stage) the downsample."""

    def __init__(self, dim: int, out_dim: int | None, depth: int, attn_depth: int, r_max: int, att_ratio: float,
                 kernel_sizes=(7,), drop: float = 0., drop_path=(), layerscale_value: float | None = 1e-4):
        super().__init__()
        dpr = list(drop_path) or [0.] * (depth + attn_depth)
        blocks: list[nn.Module] = [
            BasicBlock(dim, r, kernel_sizes, drop, dpr[i], layerscale_value)
            for i, r in enumerate(_alternate(depth, r_max))]
        blocks += [AttentionBlock(dim, att_ratio, drop=drop, drop_path=dpr[depth + j]) for j in range(attn_depth)]
        self.blocks = nn.ModuleList(blocks)
        self.downsample = PatchEmbed(dim, out_dim, 3, 2, 1) if out_dim is not None else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for blk in self.blocks:
            x = blk(x)
        if self.downsample is not None:
            x = self.downsample(x)
        return x


class EfficientMod(nn.Module):
    """EfficientMod backbone + classifier. Input (B, 3, H, W) NCHW; runs channels-last inside."""

    def __init__(
        self,
        embed_dims=(32, 64, 128, 256),
        depths=(2, 2, 6, 2),
        attn_depths=(0, 0, 1, 2),
        r_max: int = 6,
        att_ratios=(4, 4, 4, 4),
        kernel_sizes=(7,),
        in_chans: int = 3,
        num_classes: int = 1000,
        layerscale_value: float | None = 1e-4,
        drop_rate: float = 0.,
        drop_path_rate: float = 0.,
        img_size: int | None = None,  # any size works (no position embedding); accepted for the common builder API
    ):
        super().__init__()
        self.num_classes = num_classes
        self.num_features = embed_dims[-1]
        self.patch_embed = PatchEmbed(in_chans, embed_dims[0], 7, 4, 3)
        total = sum(depths) + sum(attn_depths)
        dpr = [v.item() for v in torch.linspace(0, drop_path_rate, total, device="cpu")]
        self.layers = nn.ModuleList()
        start = 0
        for i, (dim, depth, attn_depth) in enumerate(zip(embed_dims, depths, attn_depths)):
            end = start + depth + attn_depth
            self.layers.append(BasicLayer(
                dim, embed_dims[i + 1] if i + 1 < len(embed_dims) else None, depth, attn_depth, r_max,
                att_ratios[i], kernel_sizes, drop_rate, dpr[start:end], layerscale_value))
            start = end
        self.norm = nn.LayerNorm(self.num_features)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()
        self.apply(self._init_weights)

    @staticmethod
    def _init_weights(m: nn.Module) -> None:
        # as the official code: truncated normal for Linear (convs keep PyTorch's default), LayerNorm 1/0
        if isinstance(m, nn.Linear):
            trunc_normal_(m.weight, std=.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) → normalised channels-last features (B, H/32, W/32, C)."""
        x = self.patch_embed(x.permute(0, 2, 3, 1))
        for layer in self.layers:
            x = layer(x)
        return self.norm(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = torch.flatten(self.avgpool(x.permute(0, 3, 1, 2)), 1)
        return x if pre_logits else self.head(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def get_classifier(self) -> nn.Module:
        return self.head

    def reset_classifier(self, num_classes: int) -> None:
        self.num_classes = num_classes
        self.head = nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()


def _create(name: str, **kwargs) -> EfficientMod:
    return EfficientMod(**{**_CFGS[name], **kwargs})


def feature_stages(model: nn.Module) -> list[tuple[str, str]]:
    """The last block of ``layers.i``, before its downsample: channels-last, or NCHW in the rewritten form
    (``efficientmod.nchw`` turns the model into an ``Nchw...`` class)."""
    layout = "nchw" if type(model).__name__.startswith("Nchw") else "nhwc"
    return [(f"layers.{i}.blocks.{len(model.layers[i].blocks) - 1}", layout) for i in range(4)]


_COMMON = dict(family="efficientmod", input_multiple=32, crop_pct=0.875, interpolation="bicubic",
               feature_stages=feature_stages)


@register_model(params=4_736_264, paper_name="EfficientMod-xxs", aliases=("efficientMod_xxs",),
                weights="efficientMod_xxs (README Google Drive folder)", **_COMMON)
def efficientmod_xxs(**kwargs) -> EfficientMod:
    """EfficientMod-xxs: 4.7M params, 0.6 GFLOPs, 76.0 top-1 (77.1 distilled)."""
    return _create("efficientmod_xxs", **kwargs)


@register_model(params=6_627_544, paper_name="EfficientMod-xs", aliases=("efficientMod_xs",),
                weights="efficientMod_xs (README Google Drive folder)", **_COMMON)
def efficientmod_xs(**kwargs) -> EfficientMod:
    """EfficientMod-xs: 6.6M params, 0.8 GFLOPs, 78.3 top-1 (79.4 distilled)."""
    return _create("efficientmod_xs", **kwargs)


@register_model(params=12_897_184, paper_name="EfficientMod-s", aliases=("efficientMod_s",),
                weights="efficientMod_s (README Google Drive folder)", **_COMMON)
def efficientmod_s(**kwargs) -> EfficientMod:
    """EfficientMod-s: 12.9M params, 1.4 GFLOPs, 81.0 top-1 (81.9 distilled)."""
    return _create("efficientmod_s", drop_path_rate=kwargs.pop("drop_path_rate", 0.02), **kwargs)


@register_model(params=12_872_336, paper_name="EfficientMod-s-Conv", aliases=("efficientMod_s_Conv",),
                weights="efficientMod_s_Conv (README Google Drive folder)", **_COMMON)
def efficientmod_s_conv(**kwargs) -> EfficientMod:
    """EfficientMod-s-Conv (convolution only): 12.9M params, 1.5 GFLOPs, 80.5 top-1."""
    return _create("efficientmod_s_conv", drop_path_rate=kwargs.pop("drop_path_rate", 0.02), **kwargs)
