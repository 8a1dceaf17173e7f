"""Export rewrites for ACmix (Swin-ACmix and ResNet-ACmix), each proven equal to the original by the tests.

Every pass gives the module it touches an export form: a subclass of the model's class (same parameters and key
names, see :func:`swap_class`) whose forward reads a few settings. A setting left at its default keeps the
original computation, so the passes compose in any order and each can be tested on its own.

Swin-ACmix (``docs/models.md`` "ACmix → Export hazards and rewrites"):

* ``acmix.roll_as_slices``: the cyclic shift and its reverse as two-slice ``cat`` per axis instead of
  ``torch.roll``. Both ACmix paths stay in the shifted frame, as in the official code (computing the conv path
  on the unshifted map would differ at the borders and along the shift seam).
* ``acmix.window_rank4``: window partition/reverse as reshape -> transpose -> reshape at rank 4 (the official
  form goes through rank 6, which Core ML does not take; its ``int()`` on a shape is gone too).
* ``acmix.precompute_bias``: the relative position bias (a gather of the table every forward) and the shifted
  window mask as one constant per block; the table, ``relative_position_index`` and ``attn_mask`` are dropped.

ResNet-ACmix:

* ``acmix.precompute_pe``: the positional encoding ``conv_p(grid)`` as a float32 constant for the export size
  (the ``linspace`` grid otherwise exports as DOUBLE in the TorchScript ONNX exporter and ONNX Runtime refuses
  the graph); ``conv_p`` is dropped.
* ``acmix.unfold_as_slices``: ``nn.Unfold(7)`` of the reflect-padded maps as 49 static strided slices stacked on a
  new axis (rank 5); the same numbers, no im2col op.
* ``acmix.unfold_as_conv`` / ``acmix.unfold_as_separable_conv``: the unfold as one-hot convolutions, one
  (49 kernels of 7x7) or two (7 of 7x1, then 7 of 1x7 per row): one or two ops instead of 49 slices.
* ``acmix.rpe_into_keys``: the relative positional term as ``unfold(pad(k - pe))`` with the query's own
  ``<q, pe(x)>`` dropped (it is the same for all 49 window positions, so the softmax over them cancels it): one
  unfold and one full-size subtraction instead of two unfolds and two 49x-size additions.

Both:

* ``acmix.static_shapes``: no size reads in any forward; batch and spatial sizes are ints recorded by
  ``ctx.probe`` at the export shape (``aten::size``/``aten::Int`` in a traced graph break Core ML conversion).
* ``acmix.fold_rates``: ``rate1``/``rate2`` folded into neighbouring weights. Swin: rate1 into ``proj`` (weight and
  bias; window reverse is a permutation), rate2 into ``dep_conv`` (no bias). ResNet: rate2 into ``dep_conv``;
  there is no projection after the attention path, so rate1 goes into the value projection ``conv3`` and the
  value columns of ``fc`` (which also reads v) are divided by rate1 (kept as a multiply where rate1 is 0).
  In the shift form (no ``dep_conv``) rate2 goes into ``fc`` instead.
* ``acmix.shift_to_group_conv``: the tensor-shift conv path (``conv_path="shift"``) as one grouped 3x3
  convolution with the fixed one-hot kernels (the official ``dep_conv`` at its initialisation). Official models
  already have ``dep_conv`` and are left alone.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..errors import RewriteError
from ..models.acmix import (
    ACmix,
    PatchEmbed,
    PatchMerging,
    SwinTransformerBlock,
    WindowAttentionACmix,
    _make_dep_conv,
    position_grid,
    shift_sum,
)
from .base import register_rewrite, swap_class

FAMILY = ("acmix",)


# --------------------------------------------------------------------------------------------- export forms

def _roll2d(x: torch.Tensor, shift: int, sizes: tuple[int, int]) -> torch.Tensor:
    """``torch.roll(x, (shift, shift), dims=(1, 2))`` as two slices and a cat per axis (``sizes``: H, W)."""
    for dim, size in zip((1, 2), sizes):
        s = shift % size
        if s:
            x = torch.cat([x.narrow(dim, size - s, s), x.narrow(dim, 0, size - s)], dim)
    return x


class SwinBlockExport(SwinTransformerBlock):
    """Settings: ``static_batch`` (int or None), ``roll_as_slices``."""

    def _init_export(self) -> None:
        self.static_batch: int | None = None
        self.roll_as_slices = False

    def _shift(self, x: torch.Tensor, shift: int) -> torch.Tensor:
        if self.roll_as_slices:
            return _roll2d(x, shift, self.input_resolution)
        return torch.roll(x, shifts=(shift, shift), dims=(1, 2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        H, W = self.input_resolution
        C = self.dim
        B = self.static_batch if self.static_batch is not None else x.shape[0]
        shortcut = x
        x = self.norm1(x).reshape(B, H, W, C)
        if self.shift_size > 0:
            x = self._shift(x, -self.shift_size)
        x = self.attn(x, H, W, mask=self.attn_mask)
        if self.shift_size > 0:
            x = self._shift(x, self.shift_size)
        x = shortcut + self.drop_path(x.reshape(B, H * W, C))
        return x + self.drop_path(self.mlp(self.norm2(x)))


class WindowAttentionExport(WindowAttentionACmix):
    """Settings: ``static_batch``, ``window_rank4``, ``attn_bias`` (buffer: bias + mask), ``rates_folded``."""

    def _init_export(self) -> None:
        self.static_batch: int | None = None
        self.window_rank4 = False
        self.rates_folded = False
        if "attn_bias" not in self._buffers:
            self.register_buffer("attn_bias", None)

    def _partition(self, t: torch.Tensor, B: int, H: int, W: int, ws: int) -> torch.Tensor:
        """(B, H, W, C') -> (B*nW, ws*ws, C')."""
        C = 3 * self.dim
        if self.window_rank4:
            t = t.reshape(B * H // ws, ws, W // ws, ws * C).transpose(1, 2)
        else:
            t = t.reshape(B, H // ws, ws, W // ws, ws, C).permute(0, 1, 3, 2, 4, 5)
        return t.reshape(B * (H // ws) * (W // ws), ws * ws, C)

    def _reverse(self, t: torch.Tensor, B: int, H: int, W: int, ws: int) -> torch.Tensor:
        """(B*nW, ws*ws, C) -> (B, H, W, C)."""
        C = self.dim
        if self.window_rank4:
            t = t.reshape(B * H // ws, W // ws, ws, ws * C).transpose(1, 2)
        else:
            t = t.reshape(B, H // ws, W // ws, ws, ws, C).permute(0, 1, 3, 2, 4, 5)
        return t.reshape(B, H, W, C)

    def forward(self, x: torch.Tensor, H: int, W: int, mask: torch.Tensor | None = None) -> torch.Tensor:
        B = self.static_batch if self.static_batch is not None else x.shape[0]
        nH, hd, ws = self.num_heads, self.head_dim, self.window_size[0]
        N, nW, C = ws * ws, (H // ws) * (W // ws), self.dim
        kk = self.kernel_conv ** 2

        qkv = self.qkv(x)
        f_all = qkv.reshape(B, H * W, 3 * nH, hd).permute(0, 2, 1, 3)
        f_conv = self.fc(f_all).permute(0, 3, 1, 2).reshape(B, kk * hd, H, W)
        if self.conv_path == "shift":
            out_conv = shift_sum(f_conv, C, hd, self.kernel_conv, hw=(H, W))
        else:
            out_conv = self.dep_conv(f_conv)
        out_conv = out_conv.permute(0, 2, 3, 1)

        qkv = self._partition(qkv, B, H, W, ws).reshape(B * nW, N, 3, nH, hd).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        attn = (q * self.scale) @ k.transpose(-2, -1)
        if self.attn_bias is not None:  # relative position bias and shifted-window mask, precomputed
            if B == 1 or self.attn_bias.shape[0] == 1:
                attn = attn + self.attn_bias
            else:
                attn = (attn.reshape(B, nW, nH, N, N) + self.attn_bias).reshape(B * nW, nH, N, N)
        else:
            attn = attn + self.relative_position_bias().unsqueeze(0)
            if mask is not None:
                attn = attn.reshape(B, nW, nH, N, N) + mask.unsqueeze(1).unsqueeze(0)
                attn = attn.reshape(B * nW, nH, N, N)
        attn = self.attn_drop(attn.softmax(dim=-1))
        out = self.proj((attn @ v).transpose(1, 2).reshape(B * nW, N, C))
        out = self._reverse(out, B, H, W, ws)

        out = out + out_conv if self.rates_folded else self.rate1 * out + self.rate2 * out_conv
        return self.proj_drop(out)


class PatchMergingExport(PatchMerging):
    def _init_export(self) -> None:
        self.static_batch: int | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        H, W = self.input_resolution
        C = self.dim
        B = self.static_batch if self.static_batch is not None else x.shape[0]
        x = x.reshape(B, H, W, C)
        x = torch.cat([x[:, 0::2, 0::2], x[:, 1::2, 0::2], x[:, 0::2, 1::2], x[:, 1::2, 1::2]], -1)
        return self.reduction(self.norm(x.reshape(B, (H // 2) * (W // 2), 4 * C)))


class PatchEmbedExport(PatchEmbed):
    """``flatten(2)`` reads the size in a traced graph (Shape, Slice, Concat in ONNX); a static reshape instead."""

    def _init_export(self) -> None:
        self.static_batch: int | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.static_batch is None:
            return super().forward(x)
        x = self.proj(x).reshape(self.static_batch, self.proj.out_channels, self.num_patches).transpose(1, 2)
        return self.norm(x) if self.norm is not None else x


class ACmixExport(ACmix):
    """Settings: ``static_shape`` ((b, h, w) or None), ``pe`` (buffer: the positional encoding), ``unfold_form``
    ("unfold", "slices", "conv" or "conv_sep", with the buffers ``unfold_kernels``/``_rows``/``_cols``),
    ``rpe_in_keys`` (pe subtracted from k before the unfold), ``halo_tile`` (with the ``halo_mask`` module: the
    attention by matmuls over tiles, no unfold), ``rates_folded`` (rate1 into v, rate2 into dep_conv/fc) and ``rate1_mul`` (rate1 kept as a multiply)."""

    def _init_export(self) -> None:
        self.static_shape: tuple[int, int, int] | None = None
        self.unfold_form = "unfold"
        self.rpe_in_keys = False
        self.halo_tile: int | None = None
        self.rates_folded = False
        if "pe" not in self._buffers:
            self.register_buffer("pe", None)

    def _unfold(self, t: torch.Tensor, n: int, h_out: int, w_out: int) -> torch.Tensor:
        """k_att x k_att windows of the reflect-padded ``t`` (n, hd, H, W) -> (n, hd, k_att^2, h_out, w_out)."""
        t = self.pad_att(t)
        ka, s, hd = self.kernel_att, self.stride, self.head_dim
        if self.unfold_form == "slices":
            return torch.stack([t[:, :, i:i + s * (h_out - 1) + 1:s, j:j + s * (w_out - 1) + 1:s]
                                for i in range(ka) for j in range(ka)], dim=2)
        if self.unfold_form == "conv":  # depthwise conv, one one-hot kernel per window position
            return F.conv2d(t, self.unfold_kernels, stride=s, groups=hd).reshape(n, hd, ka * ka, h_out, w_out)
        if self.unfold_form == "conv_sep":  # the window's rows (ka x 1 one-hot), then each row's columns (1 x ka)
            t = F.conv2d(t, self.unfold_kernels_rows, stride=(s, 1), groups=hd)  # channel c*ka + i
            t = F.conv2d(t, self.unfold_kernels_cols, stride=(1, s), groups=hd * ka)  # (c*ka + i)*ka + j
            return t.reshape(n, hd, ka * ka, h_out, w_out)
        return self.unfold(t).reshape(n, hd, ka * ka, h_out, w_out)

    def _window_attention(self, q_att, k, v, pe, b, n, h, w, h_out, w_out) -> torch.Tensor:
        """The official form: every query's k_att x k_att window unfolded (a k_att^2-times copy of k and v)."""
        s, hd = self.stride, self.head_dim
        if getattr(self, "rpe_in_keys", False):
            # <q(x), k(y) + pe(x) - pe(y)> over the window y = x + d: <q(x), pe(x)> is the same for every d, and
            # the softmax over d cancels it; pad and unfold are linear, so unfold(pad(k)) - unfold(pad(pe)) is
            # unfold(pad(k - pe))
            unfold_k = self._unfold(k.reshape(n, hd, h, w) - pe, n, h_out, w_out)
            att = (q_att.unsqueeze(2) * unfold_k).sum(1)
        else:
            unfold_k = self._unfold(k.reshape(n, hd, h, w), n, h_out, w_out)
            q_pe = pe[:, :, ::s, ::s] if s > 1 else pe
            att = (q_att.unsqueeze(2) * (unfold_k + q_pe.unsqueeze(2) - self._unfold(pe, 1, h_out, w_out))).sum(1)
        att = self.softmax(att)
        unfold_v = self._unfold(v.reshape(n, hd, h, w), n, h_out, w_out)
        return (att.unsqueeze(1) * unfold_v).sum(2).reshape(b, self.out_planes, h_out, w_out)

    def _halo_attention(self, q_att, k, v, pe, b, n, h_out, w_out) -> torch.Tensor:
        """The same attention as matrix products over tiles (HaloNet's blocked local attention): the queries in
        ``halo_tile`` x ``halo_tile`` tiles, each against the keys of the padded region its windows cover (side
        ``R = s*(t-1) + k_att``), with ``halo_mask`` (:class:`HaloMask`: 0 inside a query's own window, -1e9
        outside) added to the logits so the softmax over the region is the softmax over the window. The positional
        term always rides on the keys here (as ``rpe_in_keys`` does for the unfold)."""
        t, s, hd, ka = self.halo_tile, self.stride, self.head_dim, self.kernel_att
        a_, b_ = h_out // t, w_out // t
        r, st = s * (t - 1) + ka, s * t
        # every reshape and transpose at rank 4 or less (Core ML takes at most rank 5, XNNPACK's transpose rank 4)
        qt = q_att.reshape(n * hd * a_, t, b_, t).transpose(1, 2).reshape(n, hd, a_ * b_, t * t)
        qt = qt.permute(0, 2, 3, 1).reshape(n * a_ * b_, t * t, hd)

        def regions(x):  # (n, hd, H+2p, W+2p) -> (n, hd, a*b, r*r): the overlapping regions, tile by tile
            # one r x r slice per tile, concatenated in tile order: no transpose (row strips, then columns, then a
            # transpose ran 1.10x slower in ONNX Runtime and 1.04x in OpenVINO; ExecuTorch and LiteRT the same)
            x = torch.cat([x[:, :, i * st:i * st + r, j * st:j * st + r] for i in range(a_) for j in range(b_)], 2)
            return x.reshape(n, hd, a_ * b_, r * r)

        kt = regions(self.pad_att(k - pe)).transpose(1, 2).reshape(n * a_ * b_, hd, r * r)
        vt = regions(self.pad_att(v)).permute(0, 2, 3, 1).reshape(n * a_ * b_, r * r, hd)
        att = torch.softmax(self.halo_mask(torch.matmul(qt, kt)), dim=-1)  # n*a*b, t*t, r*r
        out = torch.matmul(att, vt).reshape(n, a_ * b_, t * t, hd).permute(0, 3, 1, 2)  # n, hd, a*b, t*t
        out = out.reshape(n * hd * a_, b_, t, t).transpose(1, 2)
        return out.reshape(b, self.out_planes, h_out, w_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = self.conv1(x), self.conv2(x), self.conv3(x)
        if self.static_shape is not None:
            b, h, w = self.static_shape
        else:
            b, _, h, w = q.shape
        s, nh, hd = self.stride, self.head, self.head_dim
        h_out, w_out = h // s, w // s
        n = b * nh

        q_att = q.reshape(n, hd, h, w) * (float(hd) ** -0.5)
        if s > 1:
            q_att = q_att[:, :, ::s, ::s]
        pe = self.pe if self.pe is not None else self.positional_encoding(h, w, q)  # 1, hd, h, w
        if getattr(self, "halo_tile", None):
            out_att = self._halo_attention(q_att, k.reshape(n, hd, h, w), v.reshape(n, hd, h, w), pe,
                                           b, n, h_out, w_out)
        else:
            out_att = self._window_attention(q_att, k, v, pe, b, n, h, w, h_out, w_out)

        f_all = self.fc(torch.cat([t.reshape(b, nh, hd, h * w) for t in (q, k, v)], 1))
        f_conv = f_all.permute(0, 2, 1, 3).reshape(b, self.kernel_conv ** 2 * hd, h, w)
        if self.conv_path == "shift":
            out_conv = shift_sum(f_conv, self.out_planes, hd, self.kernel_conv, s, hw=(h, w))
        else:
            out_conv = self.dep_conv(f_conv)

        if not self.rates_folded:
            return self.rate1 * out_att + self.rate2 * out_conv
        if getattr(self, "rate1_mul", None) is not None:
            return self.rate1_mul * out_att + out_conv
        return out_att + out_conv


_EXPORT_FORMS = {
    SwinTransformerBlock: SwinBlockExport,
    WindowAttentionACmix: WindowAttentionExport,
    PatchMerging: PatchMergingExport,
    PatchEmbed: PatchEmbedExport,
    ACmix: ACmixExport,
}


def _export_form(module: nn.Module) -> nn.Module:
    """Give ``module`` its export form (once); the default settings keep the original computation."""
    if type(module) in _EXPORT_FORMS.values():
        return module
    cls = _EXPORT_FORMS[type(module)]
    swap_class(module, cls)
    module._init_export()
    return module


def _modules(model: nn.Module, *classes: type) -> list[tuple[str, nn.Module]]:
    return [(n, m) for n, m in model.named_modules() if isinstance(m, classes)]


# --------------------------------------------------------------------------------------------- passes

@register_rewrite("acmix.static_shapes", families=FAMILY, exact=True, batch="static",
                  description="no size reads: batch and spatial sizes as ints from ctx.probe")
def static_shapes(model: nn.Module, ctx) -> int:
    """Swin's patch embedding, blocks, window attention and patch merging take their batch from the probe (H, W
    and C are already build-time ints); ResNet-ACmix modules take (b, h, w). Traced graphs then hold no ``aten::size``/``aten::Int``.
    """
    probe = ctx.probe(model)
    count = 0
    for name, m in _modules(model, SwinTransformerBlock, WindowAttentionACmix, PatchMerging, PatchEmbed, ACmix):
        rec = probe.get(name)
        if rec is None:
            raise RewriteError(f"module {name} did not run in the probe forward")
        shape = rec.args[0]
        _export_form(m)
        if isinstance(m, ACmix):
            b, _, h, w = shape
            m.static_shape = (int(b), int(h), int(w))
        else:
            m.static_batch = int(shape[0])
            if isinstance(m, WindowAttentionACmix) and tuple(shape[1:3]) != tuple(rec.args[1:3]):
                raise RewriteError(f"{name}: probe saw {shape} for H, W = {rec.args[1:3]}")
        count += 1
    return count


@register_rewrite("acmix.roll_as_slices", families=FAMILY, exact=True,
                  description="cyclic shift as two-slice cat per axis instead of torch.roll")
def roll_as_slices(model: nn.Module, ctx) -> int:
    count = 0
    for _, m in _modules(model, SwinTransformerBlock):
        if m.shift_size > 0:
            _export_form(m).roll_as_slices = True
            count += 1
    return count


@register_rewrite("acmix.window_rank4", families=FAMILY, exact=True,
                  description="window partition/reverse at rank 4 (reshape, transpose, reshape)")
def window_rank4(model: nn.Module, ctx) -> int:
    count = 0
    for _, m in _modules(model, WindowAttentionACmix):
        _export_form(m).window_rank4 = True
        count += 1
    return count


@register_rewrite("acmix.precompute_bias", families=FAMILY, exact=False,
                  description="relative position bias + shifted-window mask as one constant per block")
def precompute_bias(model: nn.Module, ctx) -> int:
    """Each attention gets ``attn_bias`` = bias (1, nH, N, N), or bias + mask (nW, nH, N, N) in shifted blocks.
    The sum is formed once here instead of twice per forward: equal up to float rounding (mask entries are 0 or
    -100). The bias table, ``relative_position_index`` and the block's ``attn_mask`` are removed."""
    count = 0
    for _, blk in _modules(model, SwinTransformerBlock):
        attn = blk.attn
        if not isinstance(attn, WindowAttentionACmix) or "relative_position_bias_table" not in attn._parameters:
            continue
        with torch.no_grad():
            bias = attn.relative_position_bias().unsqueeze(0)  # 1, nH, N, N
            if blk.attn_mask is not None:
                bias = bias + blk.attn_mask.unsqueeze(1).to(bias)  # nW, nH, N, N
        _export_form(attn)
        attn.attn_bias = bias.detach().clone().float().contiguous()
        del attn.relative_position_bias_table
        del attn.relative_position_index
        blk.attn_mask = None  # the buffer stays registered as None: gone from the state dict
        count += 1
    return count


@register_rewrite("acmix.fold_rates", families=FAMILY, exact=False,
                  description="rate1/rate2 folded into the neighbouring weights")
def fold_rates(model: nn.Module, ctx) -> int:
    count = 0
    with torch.no_grad():
        for _, m in _modules(model, WindowAttentionACmix, ACmix):
            _export_form(m)
            if m.rates_folded:
                continue
            r1, r2 = m.rate1.detach().clone(), m.rate2.detach().clone()
            # rate2: the conv path is linear and bias-free after fc, so scale dep_conv, or fc in the shift form
            if m.dep_conv is not None:
                m.dep_conv.weight.mul_(r2)
            else:
                m.fc.weight.mul_(r2)
                if m.fc.bias is not None:
                    m.fc.bias.mul_(r2)
            if isinstance(m, WindowAttentionACmix):
                m.proj.weight.mul_(r1)
                m.proj.bias.mul_(r1)
            elif float(r1) != 0.0:
                # v feeds the attention path and (as the last `head` input channels of fc) the conv path
                m.conv3.weight.mul_(r1)
                m.conv3.bias.mul_(r1)
                m.fc.weight[:, 2 * m.head:].div_(r1)
            else:
                m.register_buffer("rate1_mul", r1)
            del m.rate1
            del m.rate2
            m.rates_folded = True
            count += 1
    return count


@register_rewrite("acmix.precompute_pe", families=FAMILY, exact=True,
                  description="ResNet-ACmix positional encoding conv_p(grid) as a float32 constant")
def precompute_pe(model: nn.Module, ctx) -> int:
    """``pe`` (1, head_dim, h, w) for the export size replaces the linspace grid and ``conv_p`` (dropped). The
    unfold of ``pe`` stays in the graph (runtimes fold it at load time), which keeps the file small: the unfolded
    term is 49x larger (about 30 MB for ResNet-26 at 224) and would not be bit-identical."""
    probe = ctx.probe(model)
    count = 0
    for name, m in _modules(model, ACmix):
        if "conv_p" not in m._modules:
            continue
        _, _, h, w = probe[name].args[0]
        _export_form(m)
        with torch.no_grad():
            pe = m.conv_p(position_grid(int(h), int(w), device=m.conv_p.weight.device, dtype=torch.float32))
        m.pe = pe.detach().contiguous()
        del m.conv_p
        count += 1
    return count


@register_rewrite("acmix.unfold_as_slices", families=FAMILY, exact=True,
                  description="nn.Unfold(7) as 49 static strided slices of the reflect-padded map")
def unfold_as_slices(model: nn.Module, ctx) -> int:
    count = 0
    for _, m in _modules(model, ACmix):
        _export_form(m).unfold_form = "slices"
        count += 1
    return count


@register_rewrite("acmix.rpe_into_keys", families=FAMILY, exact=False,
                  description="positional term as unfold(pad(k - pe)); the query's own <q, pe> cancels in softmax")
def rpe_into_keys(model: nn.Module, ctx) -> int:
    """The attention logits ``<q(x), k(y) + pe(x) - pe(y)>`` over the window positions y become ``<q(x), k(y) -
    pe(y)>``: the dropped ``<q(x), pe(x)>`` is one number per query, the same for all positions, so the softmax over
    the positions returns the same weights (equal up to float rounding, hence not exact). The graph loses one
    unfold (of pe) and two elementwise ops on the 49x-size window tensor, and gains one subtraction at map size."""
    count = 0
    for _, m in _modules(model, ACmix):
        _export_form(m).rpe_in_keys = True
        count += 1
    return count


class HaloMask(nn.Module):
    """Adds the constant window mask to the tile's logits. A module of its own so that quantizers can be told to
    leave this add alone by module path (``...conv2.halo_mask``): an INT8 add would take its range from the -1e9
    entries and round every real logit to 0 (recipe ``quantization.pt2e_modules_in_fp``)."""

    def __init__(self, mask: torch.Tensor):
        super().__init__()
        self.register_buffer("mask", mask)

    def forward(self, logits: torch.Tensor) -> torch.Tensor:
        return logits + self.mask


def halo_mask(tile: int, stride: int, kernel_att: int) -> torch.Tensor:
    """(tile^2, r^2), r = stride*(tile-1) + kernel_att: 0 where region position (ri, rj) lies in the window of
    query (ti, tj) of the tile (stride*ti <= ri < stride*ti + kernel_att, the same for columns), -1e9 elsewhere."""
    r = stride * (tile - 1) + kernel_att
    q = torch.arange(tile) * stride
    rr = torch.arange(r)
    inside = (rr[None, :] >= q[:, None]) & (rr[None, :] < q[:, None] + kernel_att)  # tile, r
    both = inside[:, None, :, None] & inside[None, :, None, :]  # ti, tj, ri, rj
    return torch.where(both, 0.0, -1e9).reshape(tile * tile, r * r)


def halo_tile(h_out: int, w_out: int, largest: int = 8) -> int | None:
    """The largest common divisor of the output sides that is at most ``largest`` (and at least 4), else None."""
    for t in range(largest, 3, -1):
        if h_out % t == 0 and w_out % t == 0:
            return t
    return None


@register_rewrite("acmix.halo_attention", families=FAMILY, exact=False,
                  description="ResNet-ACmix window attention as masked matrix products over query tiles (no unfold)")
def halo_attention(model: nn.Module, ctx) -> int:
    """Instead of a 49-times copy of k and v (the unfold) and elementwise products over it, the queries are taken in
    tiles and multiplied with the keys and values of the padded region their windows cover (two batched matmuls
    per block); a constant mask keeps each query's softmax to its own window. The positional term rides on the
    keys as in ``acmix.rpe_into_keys`` (equal up to float rounding, hence not exact). Modules whose output size has
    no tile between 4 and 8 keep the unfold."""
    probe = ctx.probe(model)
    count = 0
    for name, m in _modules(model, ACmix):
        _, _, h, w = probe[name].args[0]
        t = halo_tile(int(h) // m.stride, int(w) // m.stride)
        if t is None or m.dilation != 1:
            continue
        _export_form(m)
        m.halo_mask = HaloMask(halo_mask(t, m.stride, m.kernel_att).to(next(m.parameters())))
        m.halo_tile = t
        count += 1
    return count


@register_rewrite("acmix.unfold_as_conv", families=FAMILY, exact=True,
                  description="nn.Unfold(7) as a depthwise conv with 49 one-hot kernels")
def unfold_as_conv(model: nn.Module, ctx) -> int:
    """One op instead of 49 slices, at the price of 49 multiply-adds per unfolded element; every output is one
    input times 1 plus zeros, so the numbers are unchanged."""
    count = 0
    for _, m in _modules(model, ACmix):
        _export_form(m)
        ka, hd = m.kernel_att, m.head_dim
        p = next(m.parameters())
        kernels = torch.eye(ka * ka, device=p.device, dtype=p.dtype).reshape(ka * ka, 1, ka, ka)
        m.register_buffer("unfold_kernels", kernels.repeat(hd, 1, 1, 1))  # hd*ka^2, 1, ka, ka
        m.unfold_form = "conv"
        count += 1
    return count


@register_rewrite("acmix.unfold_as_separable_conv", families=FAMILY, exact=True,
                  description="nn.Unfold(7) as two one-hot convs: the window's 7 rows, then each row's 7 columns")
def unfold_as_separable_conv(model: nn.Module, ctx) -> int:
    """The one-hot unfold of ``acmix.unfold_as_conv`` split in two: a (7, 1) depthwise conv with 7 one-hot kernels
    per channel (the rows of the window), then a (1, 7) conv with 7 one-hot kernels per row (the columns), channel
    order as ``nn.Unfold``'s. 7 + 49 multiply-adds per unfolded element instead of 49 (the single conv computes
    each of the 49 outputs from all 49 window pixels); every output is still one input times 1 plus zeros."""
    count = 0
    for _, m in _modules(model, ACmix):
        _export_form(m)
        ka, hd = m.kernel_att, m.head_dim
        p = next(m.parameters())
        eye = torch.eye(ka, device=p.device, dtype=p.dtype)
        m.register_buffer("unfold_kernels_rows", eye.reshape(ka, 1, ka, 1).repeat(hd, 1, 1, 1))  # hd*ka, 1, ka, 1
        m.register_buffer("unfold_kernels_cols", eye.reshape(ka, 1, 1, ka).repeat(hd * ka, 1, 1, 1))
        m.unfold_form = "conv_sep"
        count += 1
    return count


@register_rewrite("acmix.shift_to_group_conv", families=FAMILY, exact=True,
                  description="tensor-shift conv path as one grouped conv with fixed one-hot kernels")
def shift_to_group_conv(model: nn.Module, ctx) -> int:
    """``conv_path="shift"`` modules get a ``dep_conv`` holding the one-hot shift kernels (frozen), which computes
    the same sums: each output reads one input per kernel position, so the results are bit-identical."""
    count = 0
    for _, m in _modules(model, WindowAttentionACmix, ACmix):
        if m.conv_path != "shift":
            continue
        out = m.dim if isinstance(m, WindowAttentionACmix) else m.out_planes
        stride = getattr(m, "stride", 1)
        p = m.fc.weight
        conv = _make_dep_conv(m.head_dim, out, m.kernel_conv, stride=stride).to(device=p.device, dtype=p.dtype)
        conv.weight.requires_grad_(False)
        m.dep_conv = conv
        m.conv_path = "conv"
        count += 1
    return count
