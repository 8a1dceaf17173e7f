"""CrossViT rewrites: the input's bicubic resize as constant matrix products, and static shapes.

Facts and equalities: ``docs/models.md`` "CrossViT → Export hazards and rewrites". Branch 1 of every CrossViT
resizes the input image (240 → 224, 408 → 384) with ``F.interpolate(mode='bicubic')``, which Core ML cannot convert.
Between fixed sizes a bicubic resize is a fixed separable linear map, ``y = A_h · x · A_wᵀ``, whose matrices are
found by resizing the identity basis with the very same call, so the rewrite is exact up to float summation order.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.layers import Attention
from timm.models import crossvit as cv

from .base import RewriteContext, register_rewrite, swap_class


def bicubic_matrix(src: int, dst: int) -> torch.Tensor:
    """(dst, src) matrix A with ``A @ v`` equal to a 1-D bicubic resize (align_corners=False, no antialias).

    The identity basis is resized in float32 on purpose: PyTorch's float32 kernel computes its interpolation
    coefficients in float32, and a float64 basis would give the "true" coefficients, which differ from the
    kernel's by up to ~1e-5 (an error of 8.6e-5 on a 240 -> 224 resize of N(0,1) noise)."""
    basis = torch.eye(src, dtype=torch.float32).reshape(src, 1, src, 1)
    out = F.interpolate(basis, size=(dst, 1), mode="bicubic", align_corners=False)
    return out.reshape(src, dst).t().contiguous()


class ResizeAsMatmul(nn.Module):
    """Fixed-size bicubic resize of an NCHW tensor as two matrix products (weights are constant buffers)."""

    def __init__(self, src_hw: tuple[int, int], dst_hw: tuple[int, int]):
        super().__init__()
        self.register_buffer("a_h", bicubic_matrix(src_hw[0], dst_hw[0]), persistent=False)
        self.register_buffer("a_w_t", bicubic_matrix(src_hw[1], dst_hw[1]).t().contiguous(), persistent=False)

    def forward(self, x):
        return torch.matmul(torch.matmul(self.a_h, x), self.a_w_t)


class StaticCrossVit(cv.CrossVit):
    static_batch: int
    static_in_hw: tuple[int, int]

    def _embed(self, x):
        B = self.static_batch
        xs = []
        for i, patch_embed in enumerate(self.patch_embed):
            x_ = x
            ss = self.img_size_scaled[i]
            if tuple(ss) != tuple(self.static_in_hw):
                resize = getattr(self, f"resize_{i}", None)
                if resize is not None:
                    x_ = resize(x_)
                elif self.crop_scale and ss[0] <= self.static_in_hw[0] and ss[1] <= self.static_in_hw[1]:
                    cu = int(round((self.static_in_hw[0] - ss[0]) / 2.0))
                    cl = int(round((self.static_in_hw[1] - ss[1]) / 2.0))
                    x_ = x_[:, :, cu:cu + ss[0], cl:cl + ss[1]]
                else:
                    x_ = F.interpolate(x_, size=tuple(ss), mode="bicubic", align_corners=False)
            x_ = patch_embed(x_)
            cls = (self.cls_token_0 if i == 0 else self.cls_token_1).expand(B, -1, -1)
            x_ = torch.cat((cls, x_), dim=1)
            x_ = x_ + (self.pos_embed_0 if i == 0 else self.pos_embed_1)
            xs.append(self.pos_drop(x_))
        return xs


class StaticPatchEmbed(cv.PatchEmbed):
    def forward(self, x):  # no shape asserts: the export size is fixed and checked when rewriting
        return self.proj(x).flatten(2).transpose(1, 2)


class StaticCrossAttention(cv.CrossAttention):
    static_bnc: tuple[int, int, int]

    def forward(self, x):
        B, N, C = self.static_bnc
        h = self.num_heads
        q = self.wq(x[:, 0:1, ...]).reshape(B, 1, h, C // h).permute(0, 2, 1, 3)
        k = self.wk(x).reshape(B, N, h, C // h).permute(0, 2, 1, 3)
        v = self.wv(x).reshape(B, N, h, C // h).permute(0, 2, 1, 3)
        attn = ((q @ k.transpose(-2, -1)) * self.scale).softmax(dim=-1)
        x = (attn @ v).transpose(1, 2).reshape(B, 1, C)
        return self.proj(x)


class StaticAttention(Attention):
    static_bn: tuple[int, int]

    def forward(self, x, attn_mask=None, is_causal=False):
        B, N = self.static_bn
        qkv = self.qkv(x).reshape(B, N, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        q, k = self.q_norm(q), self.k_norm(k)
        if self.fused_attn:
            x = F.scaled_dot_product_attention(q, k, v)
        else:
            attn = (q * self.scale) @ k.transpose(-2, -1)
            x = attn.softmax(dim=-1) @ v
        x = x.transpose(1, 2).reshape(B, N, self.attn_dim)
        x = self.norm(x)
        return self.proj(x)


def _crossvit_root(model) -> cv.CrossVit:
    if not isinstance(model, cv.CrossVit):
        raise TypeError(f"expected a CrossViT, got {type(model).__name__}")
    return model


@register_rewrite("crossvit.static_shapes", families=("crossvit",), exact=True, batch="static",
                  description="batch, token counts and input size as Python ints; no shape asserts")
def static_shapes(model, ctx: RewriteContext) -> int:
    root = _crossvit_root(model)
    probe = ctx.probe(model)
    count = 0
    for name, m in list(model.named_modules()):
        if type(m) is cv.PatchEmbed:
            swap_class(m, StaticPatchEmbed)
        elif type(m) is cv.CrossAttention:
            m.static_bnc = tuple(probe[name].args[0])
            swap_class(m, StaticCrossAttention)
        elif type(m) is Attention:
            if getattr(m, "gate", None) is not None:
                continue
            m.static_bn = tuple(probe[name].args[0][:2])
            swap_class(m, StaticAttention)
        else:
            continue
        count += 1
    if type(root) is cv.CrossVit:
        root.static_batch = ctx.batch
        root.static_in_hw = tuple(ctx.input_shape[2:])
        swap_class(root, StaticCrossVit)
        count += 1
    return count


@register_rewrite("crossvit.bicubic_as_matmul", families=("crossvit",), exact=False,
                  description="the input's bicubic resize between fixed sizes as constant matrix products")
def bicubic_as_matmul(model, ctx: RewriteContext) -> int:
    root = _crossvit_root(model)
    if not isinstance(root, StaticCrossVit):
        static_shapes(model, ctx)  # the resize lives in _embed, whose static form hosts the matrices
    in_hw = tuple(ctx.input_shape[2:])
    count = 0
    for i, ss in enumerate(root.img_size_scaled):
        ss = tuple(ss)
        if ss != in_hw and not (root.crop_scale and ss[0] <= in_hw[0] and ss[1] <= in_hw[1]):
            setattr(root, f"resize_{i}", ResizeAsMatmul(in_hw, ss))
            count += 1
    return count
