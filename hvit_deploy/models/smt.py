"""SMT: Scale-Aware Modulation Meet Transformer (Lin et al., ICCV 2023).

Our own implementation with the official submodule names (``AFeng-x/SMT``, ``models/smt.py``), so the released
checkpoints (``{'model': state_dict, ...}``) load strictly by their own keys. Facts: ``docs/models.md``
"SMT".

| canonical | aliases              | embed dims       | depths      | mlp ratios | stem k | layerscale | params     |
|-----------|----------------------|------------------|-------------|------------|--------|------------|------------|
| smt_t     | smt_tiny, SMT-T      | 64,128,256,512   | 2,2,8,1     | 4,4,4,2    | 3      | no         | 11,506,536 |
| smt_s     | smt_small, SMT-S     | 64,128,256,512   | 3,4,18,2    | 4,4,4,2    | 3      | no         | 22,550,952 |
| smt_b     | smt_base, SMT-B      | 64,128,256,512   | 4,6,28,2    | 8,6,4,2    | 7      | no         | 32,037,352 |
| smt_l     | smt_large, SMT-L     | 96,192,384,768   | 4,6,28,4    | 8,6,4,2    | 7      | yes (1e-4) | 80,620,264 |

Every variant: ``ca_num_heads=(4,4,4,-1)``, ``sa_num_heads=(-1,-1,8,16)``, ``expand_ratio=2``, ``qkv_bias=True``.
Stages 1-2 are all scale-aware modulation (SAM) blocks, stage 3 alternates SAM (even index) and global multi-head
self-attention (MSA, odd index), stage 4 is all MSA. SMT-L is built with layerscale: the official ``smt_l()``
omits it but every released SMT-L config sets ``USE_LAYERSCALE: True``, so its checkpoints carry
``gamma_1``/``gamma_2``. SMT-L was released at 224 and 384; as a convolutional network with global attention and
no position embedding, every variant takes any square input whose side is a multiple of 32.

The modules below follow the official forward exactly, including the SAM block's ``self.modulator`` side store
(kept for code that reads it; the ``smt.*`` rewrites drop it along with the other export hazards).
"""
from __future__ import annotations

import math
import re
from functools import partial

import torch
import torch.nn as nn
from timm.layers import DropPath, trunc_normal_

from ..registry import register_model

__all__ = ["SMT", "smt_t", "smt_s", "smt_b", "smt_l", "remap_official_keys"]

_COMMON = dict(ca_num_heads=(4, 4, 4, -1), sa_num_heads=(-1, -1, 8, 16), ca_attentions=(1, 1, 1, 0),
               qkv_bias=True, expand_ratio=2)

_CFGS = {
    "smt_t": dict(embed_dims=(64, 128, 256, 512), depths=(2, 2, 8, 1), mlp_ratios=(4, 4, 4, 2), head_conv=3),
    "smt_s": dict(embed_dims=(64, 128, 256, 512), depths=(3, 4, 18, 2), mlp_ratios=(4, 4, 4, 2), head_conv=3),
    "smt_b": dict(embed_dims=(64, 128, 256, 512), depths=(4, 6, 28, 2), mlp_ratios=(8, 6, 4, 2), head_conv=7),
    "smt_l": dict(embed_dims=(96, 192, 384, 768), depths=(4, 6, 28, 4), mlp_ratios=(8, 6, 4, 2), head_conv=7,
                  use_layerscale=True),
}


def _init_weights(m: nn.Module) -> None:
    """The official initialisation (the same in every SMT module)."""
    if isinstance(m, nn.Linear):
        trunc_normal_(m.weight, std=0.02)
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    elif isinstance(m, nn.LayerNorm):
        nn.init.ones_(m.weight)
        nn.init.zeros_(m.bias)
    elif isinstance(m, nn.Conv2d):
        fan_out = m.kernel_size[0] * m.kernel_size[1] * m.out_channels // m.groups
        m.weight.data.normal_(0, math.sqrt(2.0 / fan_out))
        if m.bias is not None:
            m.bias.data.zero_()


class DWConv(nn.Module):
    """3x3 depthwise conv on tokens (B, N, C) laid out as an H x W map."""

    def __init__(self, dim: int):
        super().__init__()
        self.dwconv = nn.Conv2d(dim, dim, 3, 1, 1, bias=True, groups=dim)

    def forward(self, x, H: int, W: int):
        B, N, C = x.shape
        x = self.dwconv(x.transpose(1, 2).view(B, C, H, W))
        return x.flatten(2).transpose(1, 2)


class Mlp(nn.Module):
    """fc1 -> GELU(h + DWConv3x3(h)) -> fc2 (the residual sits inside the activation)."""

    def __init__(self, in_features: int, hidden_features: int, act_layer=nn.GELU, drop: float = 0.0):
        super().__init__()
        self.fc1 = nn.Linear(in_features, hidden_features)
        self.dwconv = DWConv(hidden_features)
        self.act = act_layer()
        self.fc2 = nn.Linear(hidden_features, in_features)
        self.drop = nn.Dropout(drop)

    def forward(self, x, H: int, W: int):
        x = self.fc1(x)
        x = self.act(x + self.dwconv(x, H, W))
        x = self.drop(x)
        return self.drop(self.fc2(x))


class Attention(nn.Module):
    """SAM (``ca_attention=1``): multi-head mixed convolution + scale-aware aggregation modulating ``v``;
    MSA (``ca_attention=0``): global multi-head self-attention plus a 3x3 depthwise conv on ``v``."""

    def __init__(self, dim: int, ca_num_heads: int = 4, sa_num_heads: int = 8, qkv_bias: bool = False,
                 qk_scale: float | None = None, attn_drop: float = 0.0, proj_drop: float = 0.0,
                 ca_attention: int = 1, expand_ratio: int = 2):
        super().__init__()
        self.ca_attention = ca_attention
        self.dim = dim
        self.ca_num_heads = ca_num_heads
        self.sa_num_heads = sa_num_heads
        if ca_attention == 1:
            assert dim % ca_num_heads == 0, f"dim {dim} is not a multiple of ca_num_heads {ca_num_heads}"
        else:
            assert dim % sa_num_heads == 0, f"dim {dim} is not a multiple of sa_num_heads {sa_num_heads}"
        self.act = nn.GELU()
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)

        if ca_attention == 1:
            self.split_groups = dim // ca_num_heads
            self.v = nn.Linear(dim, dim, bias=qkv_bias)
            self.s = nn.Linear(dim, dim, bias=qkv_bias)
            width = dim // ca_num_heads
            for i in range(ca_num_heads):  # head i: kernel 3 + 2i
                setattr(self, f"local_conv_{i + 1}",
                        nn.Conv2d(width, width, kernel_size=3 + 2 * i, padding=1 + i, stride=1, groups=width))
            # each group sees the same channel index of every head (the heads are interleaved before it)
            self.proj0 = nn.Conv2d(dim, dim * expand_ratio, kernel_size=1, groups=self.split_groups)
            self.bn = nn.BatchNorm2d(dim * expand_ratio)
            self.proj1 = nn.Conv2d(dim * expand_ratio, dim, kernel_size=1)
        else:
            head_dim = dim // sa_num_heads
            self.scale = qk_scale or head_dim ** -0.5
            self.q = nn.Linear(dim, dim, bias=qkv_bias)
            self.attn_drop = nn.Dropout(attn_drop)
            self.kv = nn.Linear(dim, dim * 2, bias=qkv_bias)
            self.local_conv = nn.Conv2d(dim, dim, kernel_size=3, padding=1, stride=1, groups=dim)

    def forward(self, x, H: int, W: int):
        B, N, C = x.shape
        if self.ca_attention == 1:
            h = self.ca_num_heads
            v = self.v(x)
            s = self.s(x).reshape(B, H, W, h, C // h).permute(3, 0, 4, 1, 2)  # (head, B, C/h, H, W)
            # head i's output goes to channels j*h + i: a new axis 2, concatenated, then flattened
            mixed = torch.cat([getattr(self, f"local_conv_{i + 1}")(s[i]).reshape(B, self.split_groups, -1, H, W)
                               for i in range(h)], dim=2)
            mixed = mixed.reshape(B, C, H, W)
            s_out = self.proj1(self.act(self.bn(self.proj0(mixed))))
            self.modulator = s_out  # official side store (dropped by the export rewrites)
            x = s_out.reshape(B, C, N).permute(0, 2, 1) * v
        else:
            h = self.sa_num_heads
            q = self.q(x).reshape(B, N, h, C // h).permute(0, 2, 1, 3)
            kv = self.kv(x).reshape(B, -1, 2, h, C // h).permute(2, 0, 3, 1, 4)
            k, v = kv[0], kv[1]
            attn = (q @ k.transpose(-2, -1)) * self.scale
            attn = self.attn_drop(attn.softmax(dim=-1))
            local = self.local_conv(v.transpose(1, 2).reshape(B, N, C).transpose(1, 2).view(B, C, H, W))
            x = (attn @ v).transpose(1, 2).reshape(B, N, C) + local.view(B, C, N).transpose(1, 2)
        return self.proj_drop(self.proj(x))


class Block(nn.Module):
    def __init__(self, dim: int, ca_num_heads: int, sa_num_heads: int, mlp_ratio: float = 4.0,
                 qkv_bias: bool = False, qk_scale: float | None = None, use_layerscale: bool = False,
                 layerscale_value: float = 1e-4, drop: float = 0.0, attn_drop: float = 0.0, drop_path: float = 0.0,
                 act_layer=nn.GELU, norm_layer=nn.LayerNorm, ca_attention: int = 1, expand_ratio: int = 2):
        super().__init__()
        self.norm1 = norm_layer(dim)
        self.attn = Attention(dim, ca_num_heads=ca_num_heads, sa_num_heads=sa_num_heads, qkv_bias=qkv_bias,
                              qk_scale=qk_scale, attn_drop=attn_drop, proj_drop=drop, ca_attention=ca_attention,
                              expand_ratio=expand_ratio)
        self.drop_path = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()
        self.norm2 = norm_layer(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), act_layer=act_layer, drop=drop)
        if use_layerscale:
            self.gamma_1 = nn.Parameter(layerscale_value * torch.ones(dim))
            self.gamma_2 = nn.Parameter(layerscale_value * torch.ones(dim))
        else:
            self.gamma_1 = 1.0
            self.gamma_2 = 1.0

    def forward(self, x, H: int, W: int):
        x = x + self.drop_path(self.gamma_1 * self.attn(self.norm1(x), H, W))
        x = x + self.drop_path(self.gamma_2 * self.mlp(self.norm2(x), H, W))
        return x


class OverlapPatchEmbed(nn.Module):
    """Stages 2-4: conv 3x3 stride 2 (with bias), tokens, LayerNorm (eps 1e-5)."""

    def __init__(self, patch_size: int = 3, stride: int = 2, in_chans: int = 3, embed_dim: int = 768):
        super().__init__()
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=stride, padding=patch_size // 2)
        self.norm = nn.LayerNorm(embed_dim)

    def forward(self, x):
        x = self.proj(x)
        _, _, H, W = x.shape
        return self.norm(x.flatten(2).transpose(1, 2)), H, W


class Head(nn.Module):
    """Stem: conv k (stride 2, no bias) -> BN -> ReLU -> conv 2x2 stride 2 -> tokens -> LayerNorm (eps 1e-5)."""

    def __init__(self, head_conv: int, dim: int):
        super().__init__()
        self.conv = nn.Sequential(
            nn.Conv2d(3, dim, head_conv, 2, padding=3 if head_conv == 7 else 1, bias=False),
            nn.BatchNorm2d(dim),
            nn.ReLU(True),
            nn.Conv2d(dim, dim, kernel_size=2, stride=2),
        )
        self.norm = nn.LayerNorm(dim)

    def forward(self, x):
        x = self.conv(x)
        _, _, H, W = x.shape
        return self.norm(x.flatten(2).transpose(1, 2)), H, W


class SMT(nn.Module):
    def __init__(self, img_size: int = 224, in_chans: int = 3, num_classes: int = 1000,
                 embed_dims=(64, 128, 256, 512), ca_num_heads=(4, 4, 4, -1), sa_num_heads=(-1, -1, 8, 16),
                 mlp_ratios=(8, 6, 4, 2), qkv_bias: bool = False, qk_scale: float | None = None,
                 use_layerscale: bool = False, layerscale_value: float = 1e-4, drop_rate: float = 0.0,
                 attn_drop_rate: float = 0.0, drop_path_rate: float = 0.0,
                 norm_layer=partial(nn.LayerNorm, eps=1e-6), depths=(2, 2, 8, 1), ca_attentions=(1, 1, 1, 0),
                 num_stages: int = 4, head_conv: int = 3, expand_ratio: int = 2, **kwargs):
        super().__init__()
        if in_chans != 3:
            raise ValueError("SMT's stem is built for 3 input channels")
        kwargs.pop("use_checkpoint", None)  # passed by the official build_model; no effect at inference
        if kwargs:
            raise TypeError(f"SMT got unexpected arguments: {', '.join(sorted(kwargs))}")
        self.img_size = img_size  # the network itself is size-agnostic (multiples of 32)
        self.num_classes = num_classes
        self.depths = tuple(depths)
        self.num_stages = num_stages
        self.embed_dims = tuple(embed_dims)
        self.num_features = embed_dims[-1]
        dpr = torch.linspace(0, drop_path_rate, sum(depths), device="cpu").tolist()
        cur = 0
        for i in range(num_stages):
            if i == 0:
                patch_embed = Head(head_conv, embed_dims[0])
            else:
                patch_embed = OverlapPatchEmbed(patch_size=3, stride=2, in_chans=embed_dims[i - 1],
                                                embed_dim=embed_dims[i])
            blocks = nn.ModuleList([
                Block(embed_dims[i], ca_num_heads=ca_num_heads[i], sa_num_heads=sa_num_heads[i],
                      mlp_ratio=mlp_ratios[i], qkv_bias=qkv_bias, qk_scale=qk_scale, use_layerscale=use_layerscale,
                      layerscale_value=layerscale_value, drop=drop_rate, attn_drop=attn_drop_rate,
                      drop_path=dpr[cur + j], norm_layer=norm_layer,
                      # the evolutionary hybrid: stage 3 alternates SAM (even j) and MSA (odd j)
                      ca_attention=0 if i == 2 and j % 2 != 0 else ca_attentions[i], expand_ratio=expand_ratio)
                for j in range(depths[i])])
            cur += depths[i]
            setattr(self, f"patch_embed{i + 1}", patch_embed)
            setattr(self, f"block{i + 1}", blocks)
            setattr(self, f"norm{i + 1}", norm_layer(embed_dims[i]))
        self.head = nn.Linear(embed_dims[-1], num_classes) if num_classes > 0 else nn.Identity()
        self.apply(_init_weights)

    @torch.jit.ignore
    def no_weight_decay(self):
        return set()

    def get_classifier(self) -> nn.Module:
        return self.head

    def reset_classifier(self, num_classes: int, global_pool: str = "") -> None:
        self.num_classes = num_classes
        self.head = nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()

    def forward_features(self, x):
        B = x.shape[0]
        for i in range(self.num_stages):
            x, H, W = getattr(self, f"patch_embed{i + 1}")(x)
            for blk in getattr(self, f"block{i + 1}"):
                x = blk(x, H, W)
            x = getattr(self, f"norm{i + 1}")(x)
            if i != self.num_stages - 1:
                x = x.reshape(B, H, W, -1).permute(0, 3, 1, 2).contiguous()
        return x

    def forward_head(self, x, pre_logits: bool = False):
        x = x.mean(dim=1)
        return x if pre_logits else self.head(x)

    def forward(self, x):
        return self.forward_head(self.forward_features(x))


# ------------------------------------------------------------------------------------------ checkpoints

_DW_CONV = re.compile(r"^(block\d+\.\d+\.attn\.)dw_conv\.")


def remap_official_keys(state_dict: dict) -> dict:
    """Accept the detection/segmentation copies too: their MSA ``dw_conv`` is our (classification) ``local_conv``,
    and mmdet/mmseg checkpoints prefix the backbone with ``backbone.`` (their necks and heads are dropped)."""
    if any(k.startswith("backbone.") for k in state_dict):
        state_dict = {k[len("backbone."):]: v for k, v in state_dict.items() if k.startswith("backbone.")}
    return {_DW_CONV.sub(r"\1local_conv.", k): v for k, v in state_dict.items()}


def _build(name: str, **kwargs) -> SMT:
    cfg = {**_COMMON, **_CFGS[name]}
    cfg.update(kwargs)
    return SMT(**cfg)


def feature_stages(model: nn.Module) -> list[tuple[str, str]]:
    """Each stage ends with its own LayerNorm, as the official detection backbone returns it (tokens)."""
    return [(f"norm{i + 1}", "tokens") for i in range(4)]


_SPEC = dict(family="smt", remap_state_dict=remap_official_keys, input_multiple=32, crop_pct=0.875,
             interpolation="bicubic", feature_stages=feature_stages)
# release files: https://github.com/AFeng-x/SMT/releases/download/v1.0.0/<file>


@register_model(params=11_506_536, paper_name="SMT-T", aliases=("smt_tiny", "smt_tiny_224"),
                weights="smt_tiny.pth", **_SPEC)
def smt_t(**kwargs) -> SMT:
    """SMT-T (11.5M, 2.4G FLOPs, 82.2% top-1)."""
    return _build("smt_t", **kwargs)


@register_model(params=22_550_952, paper_name="SMT-S", aliases=("smt_small", "smt_small_224"),
                weights="smt_small.pth", **_SPEC)
def smt_s(**kwargs) -> SMT:
    """SMT-S (22.6M as built by the official code; the README says 21M; 83.7% top-1)."""
    return _build("smt_s", **kwargs)


@register_model(params=32_037_352, paper_name="SMT-B", aliases=("smt_base", "smt_base_224"),
                weights="smt_base.pth", **_SPEC)
def smt_b(**kwargs) -> SMT:
    """SMT-B (32.0M, 7.7G FLOPs, 84.3% top-1)."""
    return _build("smt_b", **kwargs)


@register_model(params=80_620_264, paper_name="SMT-L", aliases=("smt_large", "smt_large_224"),
                other_input_sizes=((3, 384, 384),), weights="smt_large_22k_224_ft.pth",
                eval_overrides=((384, 1.0, "squash"),),  # 384 is tested without the centre crop
                notes="384 weights: smt_large_22k_384_ft.pth (create_model('smt_l', input_size=384)); "
                      "ImageNet-22k pretrain: smt_large_22k.pth (num_classes=21841)", **_SPEC)
def smt_l(**kwargs) -> SMT:
    """SMT-L with layerscale (80.6M; ImageNet-22k -> 1k: 87.1% at 224, 88.1% at 384)."""
    return _build("smt_l", **kwargs)
