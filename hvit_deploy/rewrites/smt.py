"""SMT rewrites: static shapes, BN and layerscale folds, the multi-head mixed convolution as one op.

Facts and equalities: ``docs/models.md`` "SMT → Export hazards and rewrites". The official SMT

* reads H, W, B, N, C from tensors everywhere; traced, these become ``aten::Int`` casts that coremltools rejects,
  and ONNX graphs fill with Shape/Gather arithmetic;
* runs the SAM block's multi-head mixed convolution (MHMC) as four depthwise convs (3/5/7/9) in a Python loop,
  each on a slice of a rank-5 permute, concatenated on a new axis so that output channel ``j*h + i`` is head ``i``'s
  channel ``j`` (the interleave that lets the grouped ``proj0`` mix the heads);
* keeps a BatchNorm after ``proj0`` and in the stem, multiplies by ``gamma = 1.0`` when layerscale is off, and stores
  the SAM modulator on the module (``self.modulator``) in every forward.

Each rewrite below changes one of these. They compose in any order, except that ``smt.fold_interleave`` needs the
merged convolution of ``smt.merge_mhmc``. The MHMC has three equal forms:

* ``loop`` (official): 4 convs on a rank-5 permute's slices, 3 concats, reshape;
* ``split`` (``smt.mhmc_split``): 4 convs on channel slices of the (B, C, H, W) map, one stack on a new axis
  (rank 5), one reshape;
* ``merged`` (``smt.merge_mhmc``): one 9x9 depthwise conv whose kernels are the four zero-padded and centred (a zero
  tap adds nothing, and a centred kernel with padding 4 covers the same window as kernel k with padding (k-1)/2),
  then the interleave as one rank-5 transpose; with ``smt.fold_interleave`` the rows of ``s`` and the merged
  kernels are permuted so that the channels come out interleaved, and no shuffle remains (a per-channel op
  commutes with a permutation of channels).

``smt.dense_proj0`` is a fourth way to avoid the shuffle: ``proj0`` becomes a dense 1x1 conv reading the head-major
channels in place (zeros outside each group), at C/h times the MACs of the grouped conv.

The recipe (``export_recipes/smt.yaml``) picks the form per backend from ``benchmarks/smt_forms.py``.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from ..errors import RewriteError
from ..models import smt as S
from .base import RewriteContext, register_rewrite, swap_class

# ------------------------------------------------------------------------------------------------ export modules


class ExportAttention(S.Attention):
    """SAM / MSA with switchable, equal forms. Defaults reproduce the official forward."""

    static_bnchw: tuple[int, int, int, int, int] | None = None
    store_modulator: bool = True
    mhmc_form: str = "loop"          # "loop" | "split" | "merged"
    interleaved: bool = False        # merged kernels and the rows of `s` are already in interleaved order
    head_major_proj0: bool = False   # proj0 is a dense 1x1 conv taking the heads' channels in head-major order
    msa_form: str = "official"       # "official" | "slices"

    def _shapes(self, x, H, W):
        if self.static_bnchw is not None:
            return self.static_bnchw
        B, N, C = x.shape
        return B, N, C, H, W

    def _mhmc(self, x, B: int, N: int, C: int, H: int, W: int):
        h = self.ca_num_heads
        c = C // h
        if self.mhmc_form == "loop":
            s = self.s(x).reshape(B, H, W, h, c).permute(3, 0, 4, 1, 2)
            out = [getattr(self, f"local_conv_{i + 1}")(s[i]).reshape(B, c, 1, H, W) for i in range(h)]
            return torch.cat(out, dim=2).reshape(B, C, H, W)
        s = self.s(x).transpose(1, 2).reshape(B, C, H, W)
        if self.mhmc_form == "split":
            parts = s.split(c, dim=1)
            out = [getattr(self, f"local_conv_{i + 1}")(parts[i]) for i in range(h)]
            if self.head_major_proj0:
                return torch.cat(out, dim=1)
            return torch.stack(out, dim=2).reshape(B, C, H, W)
        s = self.mhmc(s)
        if self.interleaved or self.head_major_proj0:
            return s
        return s.reshape(B, h, c, H, W).transpose(1, 2).reshape(B, C, H, W)

    def forward(self, x, H: int, W: int):
        B, N, C, H, W = self._shapes(x, H, W)
        if self.ca_attention == 1:
            v = self.v(x)
            s = self._mhmc(x, B, N, C, H, W)
            s = self.proj1(self.act(self.bn(self.proj0(s))))
            if self.store_modulator:
                self.modulator = s
            x = s.reshape(B, C, N).transpose(1, 2) * v
        elif self.msa_form == "slices":
            h = self.sa_num_heads
            d = C // h
            q = self.q(x).reshape(B, N, h, d).transpose(1, 2)               # (B, h, N, d)
            kv = self.kv(x)                                                 # (B, N, 2C): k | v, head-major
            k, v_tok = kv.split(C, dim=-1)
            k_t = k.reshape(B, N, h, d).permute(0, 2, 3, 1)                 # (B, h, d, N)
            v = v_tok.reshape(B, N, h, d).transpose(1, 2)                   # (B, h, N, d)
            attn = self.attn_drop(((q @ k_t) * self.scale).softmax(dim=-1))
            local = self.local_conv(v_tok.transpose(1, 2).reshape(B, C, H, W))
            x = (attn @ v).transpose(1, 2).reshape(B, N, C) + local.reshape(B, C, N).transpose(1, 2)
        else:
            h = self.sa_num_heads
            q = self.q(x).reshape(B, N, h, C // h).permute(0, 2, 1, 3)
            kv = self.kv(x).reshape(B, N, 2, h, C // h).permute(2, 0, 3, 1, 4)
            k, v = kv[0], kv[1]
            attn = self.attn_drop(((q @ k.transpose(-2, -1)) * self.scale).softmax(dim=-1))
            local = self.local_conv(v.transpose(1, 2).reshape(B, N, C).transpose(1, 2).reshape(B, C, H, W))
            x = (attn @ v).transpose(1, 2).reshape(B, N, C) + local.reshape(B, C, N).transpose(1, 2)
        return self.proj_drop(self.proj(x))


class ExportBlock(S.Block):
    """Skips the multiplication by a layerscale of 1.0 (the official code multiplies by the float 1.0)."""

    def forward(self, x, H: int, W: int):
        a = self.attn(self.norm1(x), H, W)
        if not (isinstance(self.gamma_1, float) and self.gamma_1 == 1.0):
            a = self.gamma_1 * a
        x = x + self.drop_path(a)
        m = self.mlp(self.norm2(x), H, W)
        if not (isinstance(self.gamma_2, float) and self.gamma_2 == 1.0):
            m = self.gamma_2 * m
        return x + self.drop_path(m)


class StaticDWConv(S.DWConv):
    static_bnchw: tuple[int, int, int, int, int]

    def forward(self, x, H: int, W: int):
        B, N, C, H, W = self.static_bnchw
        x = self.dwconv(x.transpose(1, 2).reshape(B, C, H, W))
        return x.reshape(B, C, N).transpose(1, 2)


class StaticOverlapPatchEmbed(S.OverlapPatchEmbed):
    static_hw: tuple[int, int]

    def forward(self, x):
        x = self.proj(x)
        H, W = self.static_hw
        return self.norm(x.flatten(2).transpose(1, 2)), H, W


class StaticHead(S.Head):
    static_hw: tuple[int, int]

    def forward(self, x):
        x = self.conv(x)
        H, W = self.static_hw
        return self.norm(x.flatten(2).transpose(1, 2)), H, W


class StaticSMT(S.SMT):
    static_batch: int

    def forward_features(self, x):
        B = self.static_batch
        for i in range(self.num_stages):
            x, H, W = getattr(self, f"patch_embed{i + 1}")(x)
            for blk in getattr(self, f"block{i + 1}"):
                x = blk(x, H, W)
            x = getattr(self, f"norm{i + 1}")(x)
            if i != self.num_stages - 1:
                x = x.reshape(B, H, W, self.embed_dims[i]).permute(0, 3, 1, 2).contiguous()
        return x


# ------------------------------------------------------------------------------------------------------- helpers

def _attentions(model: nn.Module, sam: bool | None = None):
    for name, m in model.named_modules():
        if isinstance(m, S.Attention) and (sam is None or (m.ca_attention == 1) == sam):
            if type(m) is S.Attention:
                swap_class(m, ExportAttention)
            yield name, m


def _bnchw(ctx: RewriteContext, model: nn.Module, name: str) -> tuple[int, int, int, int, int]:
    rec = ctx.probe(model)[name]
    B, N, C = rec.args[0]
    H, W = (rec.args[1], rec.args[2]) if len(rec.args) >= 3 else (rec.kwargs["H"], rec.kwargs["W"])
    H, W = int(H), int(W)
    if H * W != N:
        raise RewriteError(f"{name}: {N} tokens for an {H}x{W} map")
    return int(B), int(N), int(C), H, W


def _fold_bn_into_conv(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> None:
    """conv ← bn ∘ conv (eval statistics): w' = w·γ/σ, b' = (b − μ)·γ/σ + β."""
    with torch.no_grad():
        std = (bn.running_var.double() + bn.eps).sqrt()
        scale = (bn.weight.double() if bn.affine else torch.ones_like(std)) / std
        shift = bn.bias.double() if bn.affine else torch.zeros_like(std)
        b = conv.bias.double() if conv.bias is not None else torch.zeros_like(std)
        w = conv.weight.double() * scale.reshape(-1, 1, 1, 1)
        conv.weight.copy_(w.to(conv.weight.dtype))
        new_b = ((b - bn.running_mean.double()) * scale + shift).to(conv.weight.dtype)
        if conv.bias is None:
            conv.bias = nn.Parameter(new_b)
        else:
            conv.bias.copy_(new_b)


# ------------------------------------------------------------------------------------------------------ rewrites

@register_rewrite("smt.static_shapes", families=("smt",), exact=True, batch="dynamic",
                  description="B, N, C, H, W as Python ints for the export shape (no size reads from tensors)")
def static_shapes(model: nn.Module, ctx: RewriteContext) -> int:
    probe = ctx.probe(model)
    count = 0
    for name, m in list(model.named_modules()):
        if isinstance(m, S.Attention):
            if type(m) is S.Attention:
                swap_class(m, ExportAttention)
            B, *rest = _bnchw(ctx, model, name)
            m.static_bnchw = (ctx.batch_dim(B), *rest)  # B only ever leads a reshape: -1 can stand for it
        elif type(m) is S.DWConv:
            B, *rest = _bnchw(ctx, model, name)
            m.static_bnchw = (ctx.batch_dim(B), *rest)
            swap_class(m, StaticDWConv)
        elif type(m) in (S.Head, S.OverlapPatchEmbed):
            _, H, W = probe[name].output_shape
            m.static_hw = (int(H), int(W))
            swap_class(m, StaticHead if type(m) is S.Head else StaticOverlapPatchEmbed)
        elif type(m) is S.SMT:
            m.static_batch = ctx.batch_dim()
            swap_class(m, StaticSMT)
        else:
            continue
        count += 1
    return count


@register_rewrite("smt.drop_modulator", families=("smt",), exact=True,
                  description="no side store of the SAM modulator (self.modulator) in forward")
def drop_modulator(model: nn.Module, ctx: RewriteContext) -> int:
    count = 0
    for _, m in _attentions(model, sam=True):
        m.store_modulator = False
        m.__dict__.pop("modulator", None)
        count += 1
    return count


@register_rewrite("smt.fold_bn", families=("smt",), exact=False,
                  description="BatchNorm folded into the preceding conv (SAM proj0 → bn; stem conv → bn)")
def fold_bn(model: nn.Module, ctx: RewriteContext) -> int:
    count = 0
    for _, m in _attentions(model, sam=True):
        if isinstance(m.bn, nn.BatchNorm2d):
            _fold_bn_into_conv(m.proj0, m.bn)
            m.bn = nn.Identity()
            count += 1
    for m in model.modules():
        if isinstance(m, S.Head) and isinstance(m.conv[1], nn.BatchNorm2d):
            _fold_bn_into_conv(m.conv[0], m.conv[1])
            m.conv[1] = nn.Identity()
            count += 1
    return count


@register_rewrite("smt.fold_layerscale", families=("smt",), exact=False,
                  description="layerscale folded into attn.proj and mlp.fc2; no multiplication by 1.0")
def fold_layerscale(model: nn.Module, ctx: RewriteContext) -> int:
    count = 0
    for m in model.modules():
        if not isinstance(m, S.Block):
            continue
        for gname, linear in (("gamma_1", m.attn.proj), ("gamma_2", m.mlp.fc2)):
            g = getattr(m, gname)
            if isinstance(g, torch.Tensor):
                with torch.no_grad():
                    linear.weight.mul_(g.detach().reshape(-1, 1))
                    if linear.bias is not None:
                        linear.bias.mul_(g.detach())
                delattr(m, gname)
                setattr(m, gname, 1.0)
            elif g != 1.0:
                raise RewriteError(f"unexpected layerscale {g!r}")
        if type(m) is S.Block:
            swap_class(m, ExportBlock)
        count += 1
    return count


@register_rewrite("smt.mhmc_split", families=("smt",), exact=True,
                  description="MHMC as 4 depthwise convs on channel slices and one rank-5 stack (no rank-5 permute)")
def mhmc_split(model: nn.Module, ctx: RewriteContext) -> int:
    count = 0
    for name, m in _attentions(model, sam=True):
        if m.mhmc_form != "loop":
            raise RewriteError(f"{name}: the mixed convolution is already in the {m.mhmc_form!r} form")
        m.mhmc_form = "split"
        count += 1
    return count


@register_rewrite("smt.merge_mhmc", families=("smt",), exact=False,
                  description="MHMC's four depthwise convs (3/5/7/9) as one 9x9 depthwise conv (kernels zero-padded)")
def merge_mhmc(model: nn.Module, ctx: RewriteContext) -> int:
    count = 0
    for name, m in _attentions(model, sam=True):
        if m.mhmc_form == "merged":
            continue
        h = m.ca_num_heads
        convs = [getattr(m, f"local_conv_{i + 1}") for i in range(h)]
        k = max(c.kernel_size[0] for c in convs)
        C = m.dim
        ref = convs[0].weight
        merged = nn.Conv2d(C, C, k, padding=k // 2, groups=C, bias=True, device=ref.device, dtype=ref.dtype)
        with torch.no_grad():
            merged.weight.zero_()
            merged.bias.zero_()
            c = C // h
            for i, conv in enumerate(convs):
                ki = conv.kernel_size[0]
                if conv.padding[0] != ki // 2 or conv.kernel_size[0] != conv.kernel_size[1] or conv.stride != (1, 1):
                    raise RewriteError(f"{name}.local_conv_{i + 1}: not a centred, same-size depthwise conv")
                off = (k - ki) // 2
                merged.weight[i * c:(i + 1) * c, :, off:off + ki, off:off + ki] = conv.weight
                if conv.bias is not None:
                    merged.bias[i * c:(i + 1) * c] = conv.bias
        for i in range(h):
            delattr(m, f"local_conv_{i + 1}")
        m.mhmc = merged
        m.mhmc_form = "merged"
        m.interleaved = False
        count += 1
    return count


@register_rewrite("smt.fold_interleave", families=("smt",), exact=False,
                  description="head interleave folded into the rows of s and the merged kernels (no channel shuffle)")
def fold_interleave(model: nn.Module, ctx: RewriteContext) -> int:
    count = 0
    for name, m in _attentions(model, sam=True):
        if m.mhmc_form != "merged":
            raise RewriteError(f"{name}: smt.fold_interleave needs smt.merge_mhmc before it")
        if m.interleaved:
            continue
        h, C = m.ca_num_heads, m.dim
        c = C // h
        # interleaved channel j*h + i holds head-major channel i*c + j
        perm = torch.arange(C).reshape(h, c).t().reshape(-1)
        with torch.no_grad():
            m.s.weight.copy_(m.s.weight[perm])
            if m.s.bias is not None:
                m.s.bias.copy_(m.s.bias[perm])
            m.mhmc.weight.copy_(m.mhmc.weight[perm])
            m.mhmc.bias.copy_(m.mhmc.bias[perm])
        m.interleaved = True
        count += 1
    return count


@register_rewrite("smt.dense_proj0", families=("smt",), exact=False,
                  description="SAM proj0 (grouped 1x1) as a dense 1x1 conv taking the heads in head-major order, "
                              "so no interleave is needed (more MACs, fewer ops)")
def dense_proj0(model: nn.Module, ctx: RewriteContext) -> int:
    """Group ``g`` of ``proj0`` reads interleaved channels ``g*h .. g*h+h-1`` (head ``i``, channel ``g``), which are
    head-major channels ``i*c + g``; a dense conv with zeros outside each group's inputs reads them in place. Needs
    the ``split`` or non-interleaved ``merged`` form of the mixed convolution before it."""
    count = 0
    for name, m in _attentions(model, sam=True):
        if m.head_major_proj0:
            continue
        if m.mhmc_form not in ("split", "merged") or m.interleaved:
            raise RewriteError(f"{name}: smt.dense_proj0 needs smt.mhmc_split or smt.merge_mhmc (without "
                               f"smt.fold_interleave) before it")
        old = m.proj0
        h, C = m.ca_num_heads, m.dim
        c = C // h
        groups = old.groups
        out_per_group = old.out_channels // groups
        new = nn.Conv2d(C, old.out_channels, 1, bias=old.bias is not None, device=old.weight.device,
                        dtype=old.weight.dtype)
        with torch.no_grad():
            new.weight.zero_()
            for g in range(groups):
                rows = slice(g * out_per_group, (g + 1) * out_per_group)
                for i in range(h):  # interleaved input g*h + i is head-major input i*c + g
                    new.weight[rows, i * c + g] = old.weight[rows, i]
            if old.bias is not None:
                new.bias.copy_(old.bias)
        m.proj0 = new
        m.head_major_proj0 = True
        count += 1
    return count


@register_rewrite("smt.msa_slices", families=("smt",), exact=False,
                  description="MSA: k and v as slices of kv, kᵀ by one permute, v's map by one transpose")
def msa_slices(model: nn.Module, ctx: RewriteContext) -> int:
    count = 0
    for _, m in _attentions(model, sam=False):
        m.msa_form = "slices"
        count += 1
    return count
