"""Twins rewrites: static shapes and SVT's locally-grouped attention at rank <= 5.

Facts and equalities: ``docs/models.md`` "Twins → Export hazards and rewrites". timm's Twins reads H and W from
tensors in every patch embedding and passes them down as ``size``; traced, these become ``aten::Int`` casts that
coremltools rejects, and ONNX graphs fill with Shape/Gather arithmetic. The official LSA also views windows as a
rank-6 tensor, which Core ML refuses outright.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from timm.models import twins as tw

from .base import RewriteContext, register_rewrite, swap_class


def _hw(ctx: RewriteContext, model, name: str) -> tuple[int, int]:
    """Token grid (H, W) a Twins block sees, read from the shape probe's ``size`` argument."""
    rec = ctx.probe(model)[name]
    size = rec.args[1] if len(rec.args) > 1 else rec.kwargs["size"]
    return int(size[0]), int(size[1])


class StaticPatchEmbed(tw.PatchEmbed):
    static_out: tuple[int, int]

    def forward(self, x):
        x = self.proj(x).flatten(2).transpose(1, 2)
        return self.norm(x), self.static_out


class StaticPosConv(tw.PosConv):
    static_bchw: tuple[int, int, int, int]

    def forward(self, x, size):
        B, C, H, W = self.static_bchw
        feat = x.transpose(1, 2).reshape(B, C, H, W)
        y = self.proj(feat)
        if self.stride == 1:
            y = y + feat  # out of place (timm: `x += ...`)
        return y.flatten(2).transpose(1, 2)


class StaticGSA(tw.GlobalSubSampleAttn):
    static_bnc_hw: tuple[int, int, int, int, int]
    static_nkv: int  # key/value tokens after the sub-sampling (so that B may be -1 in every reshape)

    def forward(self, x, size):
        B, N, C, H, W = self.static_bnc_hw
        h, d, nkv = self.num_heads, C // self.num_heads, self.static_nkv
        q = self.q(x).reshape(B, N, h, d).permute(0, 2, 1, 3)
        if self.sr is not None:
            x = x.permute(0, 2, 1).reshape(B, C, H, W)
            x = self.sr(x).reshape(B, C, nkv).permute(0, 2, 1)
            x = self.norm(x)
        kv = self.kv(x).reshape(B, nkv, 2, h, d).permute(2, 0, 3, 1, 4)
        k, v = kv.unbind(0)
        if self.fused_attn:
            x = F.scaled_dot_product_attention(q, k, v)
        else:
            attn = (q * self.scale) @ k.transpose(-2, -1)
            x = attn.softmax(dim=-1) @ v
        x = x.transpose(1, 2).reshape(B, N, C)
        return self.proj(x)


class Rank5LSA(tw.LocallyGroupedAttn):
    """Windows as (B·h, ws, w, ws·C) → (nW, ws², C): rank 4 for the partition, rank 5 for the head split."""

    static_bhwc: tuple[int, int, int, int]

    def forward(self, x, size):
        B, H, W, C = self.static_bhwc
        ws, nh = self.ws, self.num_heads
        pad_r, pad_b = (ws - W % ws) % ws, (ws - H % ws) % ws
        Hp, Wp = H + pad_b, W + pad_r
        h, w = Hp // ws, Wp // ws
        # B is -1 for a dynamic-batch export: then the products with it are inferred (-1) too
        bh, bhw = (B * h, B * h * w) if B > 0 else (-1, -1)
        x = x.reshape(B, H, W, C)
        if pad_r or pad_b:  # zero padding without a mask, as timm does; constants at the export size
            x = F.pad(x, (0, 0, 0, pad_r, 0, pad_b))
        x = x.reshape(bh, ws, w, ws * C).transpose(1, 2).reshape(bhw, ws * ws, C)
        qkv = self.qkv(x).reshape(bhw, ws * ws, 3, nh, C // nh).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        if self.fused_attn:
            x = F.scaled_dot_product_attention(q, k, v)
        else:
            attn = (q * self.scale) @ k.transpose(-2, -1)
            x = attn.softmax(dim=-1) @ v
        x = x.transpose(1, 2).reshape(bh, w, ws, ws * C).transpose(1, 2).reshape(B, Hp, Wp, C)
        if pad_r or pad_b:
            x = x[:, :H, :W, :]
        return self.proj(x.reshape(B, H * W, C))


class StaticTwins(tw.Twins):
    static_batch: int

    def forward_features(self, x):
        B = self.static_batch
        last = len(self.depths) - 1
        for i, (embed, drop, blocks, pos_blk) in enumerate(
                zip(self.patch_embeds, self.pos_drops, self.blocks, self.pos_block)):
            x, size = embed(x)
            x = drop(x)
            for j, blk in enumerate(blocks):
                x = blk(x, size)
                if j == 0:
                    x = pos_blk(x, size)
            if i < last:
                x = x.reshape(B, size[0], size[1], self.embed_dims[i]).permute(0, 3, 1, 2)
        return self.norm(x)


@register_rewrite("twins.static_shapes", families=("twins",), exact=True, batch="dynamic",
                  description="sizes, batch and token counts as Python ints for the export shape")
def static_shapes(model, ctx: RewriteContext) -> int:
    probe = ctx.probe(model)
    count = 0
    for name, m in list(model.named_modules()):
        if type(m) is tw.PatchEmbed:
            out_tokens = probe[name].output_shape[0]
            in_h, in_w = probe[name].args[0][2:]
            m.static_out = (in_h // m.patch_size[0], in_w // m.patch_size[1])
            assert out_tokens[1] == m.static_out[0] * m.static_out[1]
            swap_class(m, StaticPatchEmbed)
        elif type(m) is tw.PosConv:
            B, N, C = probe[name].args[0]
            H, W = _hw(ctx, model, name)
            m.static_bchw = (ctx.batch_dim(B), C, H, W)
            swap_class(m, StaticPosConv)
        elif type(m) is tw.GlobalSubSampleAttn:
            B, N, C = probe[name].args[0]
            H, W = _hw(ctx, model, name)
            m.static_bnc_hw = (ctx.batch_dim(B), N, C, H, W)
            m.static_nkv = int(probe[f"{name}.kv"].args[0][1])
            swap_class(m, StaticGSA)
        elif type(m) is tw.LocallyGroupedAttn:
            continue  # rank-5 form below carries its own static shapes
        elif type(m) is tw.Twins:
            m.static_batch = ctx.batch_dim()
            swap_class(m, StaticTwins)
        else:
            continue
        count += 1
    return count


@register_rewrite("twins.lsa_rank5", families=("twins",), exact=False, batch="dynamic",
                  description="SVT local window attention at rank <= 5 with static shapes (Core ML takes rank <= 5)")
def lsa_rank5(model, ctx: RewriteContext) -> int:
    probe = ctx.probe(model)
    count = 0
    for name, m in list(model.named_modules()):
        if type(m) is tw.LocallyGroupedAttn:
            B, N, C = probe[name].args[0]
            H, W = _hw(ctx, model, name)
            m.static_bhwc = (ctx.batch_dim(B), H, W, C)
            swap_class(m, Rank5LSA)
            count += 1
    return count
