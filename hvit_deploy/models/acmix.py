"""ACmix: On the Integration of Self-Attention and Convolution (Pan et al., CVPR 2022).

An ACmix module shares one set of 1x1 projections between two paths: windowed self-attention on q, k, v, and a
"convolution" path where a light fully connected layer (``fc``) mixes the 3 x heads projected maps into k*k = 9
maps per head channel, which are then shifted in the kernel's 9 directions and summed. The official code does the
shift-and-sum with ``dep_conv``, a grouped 3x3 convolution (groups = head_dim, no bias) initialised to the 9
one-hot shift kernels and then *trained*; released weights are therefore not pure shifts.

``conv_path="shift"`` builds the paper's tensor-shift form instead: zero-filled shifts of the ``fc`` output in
the 9 directions, summed, with no ``dep_conv`` (the fixed one-hot kernels carry no parameters). It is an ablation
form, not the released models; ``acmix.shift_to_group_conv`` (in ``hvit_deploy.rewrites.acmix``) turns it into the
equal grouped convolution.

Official code: LeapLabTHU/ACmix (``Swin-Transformer/models/swin_transformer_acmix.py``,
``ResNet/test_bottleneck.py``, ``ResNet/ResNet_ImageNet.py``). Module and parameter names follow it so official
checkpoints load by their own keys: ``{'model': ...}`` (+ yacs config) for Swin, ``{'state_dict': ...}`` with the
DDP ``module.`` prefix for ResNet.

| canonical      | paper name        | config                                                 | input          | params     |
|----------------|-------------------|--------------------------------------------------------|----------------|------------|
| acmix_swin_t   | Swin-T + ACmix    | embed 96, depths 2,2,6,2, heads 3,6,12,24, window 7   | 224 (x224)     | 28,649,908 |
| acmix_swin_s   | Swin-S + ACmix    | embed 96, depths 2,2,18,2, heads 3,6,12,24, window 7  | 224 (x224)     | 50,345,080 |
| acmix_resnet26 | ResNet-26 + ACmix | layers 1,2,4,1, k_att 7, head 4, k_conv 3             | 224 (x32)      | 10,487,816 |
| acmix_resnet38 | ResNet-38 + ACmix | layers 2,3,5,2                                         | 224 (x32)      | 14,410,896 |
| acmix_resnet50 | ResNet-50 + ACmix | layers 3,4,6,3                                         | 224 (x32)      | 18,333,976 |

Swin needs every stage's token grid to be a multiple of the window (7), i.e. inputs that are multiples of 224.
ResNet-ACmix takes multiples of 32; its reflect padding (3) needs every stage at least 4x4, so inputs below 128
only work for ResNet-26 (one block in stage 4), down to 64.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.layers import DropPath, to_2tuple, trunc_normal_

from ..errors import HvitError
from ..registry import register_model

__all__ = [
    "ACmix", "WindowAttentionACmix", "SwinTransformerACmix", "ResNetACmix",
    "shift_kernels", "shift_sum", "CONV_PATHS",
]

CONV_PATHS = ("conv", "shift")

_SWIN_CFGS = {
    "acmix_swin_t": dict(embed_dim=96, depths=(2, 2, 6, 2), num_heads=(3, 6, 12, 24), drop_path_rate=0.2),
    "acmix_swin_s": dict(embed_dim=96, depths=(2, 2, 18, 2), num_heads=(3, 6, 12, 24), drop_path_rate=0.3),
}
_RESNET_LAYERS = {
    "acmix_resnet26": (1, 2, 4, 1),
    "acmix_resnet38": (2, 3, 5, 2),
    "acmix_resnet50": (3, 4, 6, 3),
}
# buffers every model recomputes at build time; official files may or may not carry them
IGNORE_KEYS = ("relative_position_index", "attn_mask")


# --------------------------------------------------------------------------------------------- the conv path

def shift_kernels(k: int = 3) -> torch.Tensor:
    """The k*k one-hot kernels (k*k, k, k): kernel i picks the input at offset (i // k - k//2, i % k - k//2)."""
    kernel = torch.zeros(k * k, k, k)
    for i in range(k * k):
        kernel[i, i // k, i % k] = 1.0
    return kernel


def shift_sum(f: torch.Tensor, out_channels: int, groups: int, k: int = 3, stride: int = 1,
              hw: tuple[int, int] | None = None) -> torch.Tensor:
    """The tensor-shift form of the conv path.

    ``f`` is (B, groups*k*k, H, W) with channel g*k*k + i holding group g's map for kernel position i. Each map is
    shifted (zero-filled) so that output (y, x) reads input (y + i//k - k//2, x + i%k - k//2), the k*k shifted maps
    of a group are summed, and every one of the group's ``out_channels // G`` outputs gets that sum: exactly a
    grouped k x k convolution (padding k//2) whose kernels are the fixed one-hot shift kernels. ``hw`` passes the
    spatial size as ints (static shapes for export) instead of reading it from ``f``.
    """
    H, W = hw if hw is not None else f.shape[-2:]
    kk = k * k
    p = k // 2
    h_out = (H + 2 * p - k) // stride + 1
    w_out = (W + 2 * p - k) // stride + 1
    padded = F.pad(f, (p, p, p, p))
    out = None
    for i in range(kk):
        a, b = i // k, i % k
        part = padded[:, i::kk, a:a + stride * (h_out - 1) + 1:stride, b:b + stride * (w_out - 1) + 1:stride]
        out = part if out is None else out + part
    return out.repeat_interleave(out_channels // groups, dim=1)


def _init_rates(*rates: nn.Parameter) -> None:
    for r in rates:
        nn.init.constant_(r, 0.5)


def _make_dep_conv(head_dim: int, out_channels: int, k: int, stride: int = 1) -> nn.Conv2d:
    """The official ``dep_conv``: grouped k x k conv, groups = head_dim, no bias, shift-kernel initialisation."""
    conv = nn.Conv2d(k * k * head_dim, out_channels, kernel_size=k, padding=1, stride=stride, groups=head_dim,
                     bias=False)
    with torch.no_grad():
        conv.weight.copy_(shift_kernels(k).unsqueeze(0).expand(out_channels, -1, -1, -1))
    return conv


def _check_conv_path(conv_path: str) -> None:
    if conv_path not in CONV_PATHS:
        raise ValueError(f"conv_path must be one of {CONV_PATHS}, not {conv_path!r}")


# --------------------------------------------------------------------------------------------- Swin + ACmix

def window_partition(x: torch.Tensor, window_size: int) -> torch.Tensor:
    """(B, H, W, C) -> (B * nW, ws, ws, C), windows in row-major order."""
    B, H, W, C = x.shape
    x = x.view(B, H // window_size, window_size, W // window_size, window_size, C)
    return x.permute(0, 1, 3, 2, 4, 5).contiguous().view(-1, window_size, window_size, C)


def window_reverse(windows: torch.Tensor, window_size: int, H: int, W: int) -> torch.Tensor:
    """(B * nW, ws, ws, C) -> (B, H, W, C)."""
    B = int(windows.shape[0] / (H * W / window_size / window_size))
    x = windows.view(B, H // window_size, W // window_size, window_size, window_size, -1)
    return x.permute(0, 1, 3, 2, 4, 5).contiguous().view(B, H, W, -1)


def relative_position_index(window_size: tuple[int, int]) -> torch.Tensor:
    """(Wh*Ww, Wh*Ww) index into the ((2Wh-1)(2Ww-1), nH) bias table."""
    wh, ww = window_size
    coords = torch.stack(torch.meshgrid(torch.arange(wh), torch.arange(ww), indexing="ij")).flatten(1)
    rel = (coords[:, :, None] - coords[:, None, :]).permute(1, 2, 0)
    return (rel[..., 0] + wh - 1) * (2 * ww - 1) + (rel[..., 1] + ww - 1)


def shifted_window_mask(resolution: tuple[int, int], window_size: int, shift_size: int) -> torch.Tensor:
    """(nW, N, N) mask of the shifted windows: 0 within a region, -100 across regions."""
    H, W = resolution
    img = torch.zeros(1, H, W, 1)
    bounds = (slice(0, -window_size), slice(-window_size, -shift_size), slice(-shift_size, None))
    region = 0
    for hs in bounds:
        for ws in bounds:
            img[:, hs, ws, :] = region
            region += 1
    windows = window_partition(img, window_size).view(-1, window_size * window_size)
    diff = windows.unsqueeze(1) - windows.unsqueeze(2)
    return diff.masked_fill(diff != 0, -100.0).masked_fill(diff == 0, 0.0)


class Mlp(nn.Module):
    def __init__(self, in_features: int, hidden_features: int, act_layer=nn.GELU, drop: float = 0.0):
        super().__init__()
        self.fc1 = nn.Linear(in_features, hidden_features)
        self.act = act_layer()
        self.fc2 = nn.Linear(hidden_features, in_features)
        self.drop = nn.Dropout(drop)

    def forward(self, x):
        return self.drop(self.fc2(self.drop(self.act(self.fc1(x)))))


class WindowAttentionACmix(nn.Module):
    """ACmix in place of Swin's window attention, on the (already cyclically shifted) (B, H, W, C) map.

    Attention path: windowed MHSA with relative position bias (+ the shifted-window mask), ``proj``, window
    reverse. Conv path: ``fc`` (1x1 conv over the 3*nH axis, with bias) gives 9 maps per head channel, laid out as
    channel d*9 + i, then ``dep_conv`` (or the shift-and-sum). Output ``rate1 * attn + rate2 * conv``.
    """

    def __init__(self, dim: int, window_size: tuple[int, int], num_heads: int, qkv_bias: bool = True,
                 qk_scale: float | None = None, attn_drop: float = 0.0, proj_drop: float = 0.0,
                 conv_path: str = "conv"):
        super().__init__()
        _check_conv_path(conv_path)
        self.dim = dim
        self.window_size = window_size
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.scale = qk_scale or self.head_dim ** -0.5
        self.kernel_conv = 3
        self.conv_path = conv_path

        self.relative_position_bias_table = nn.Parameter(
            torch.zeros((2 * window_size[0] - 1) * (2 * window_size[1] - 1), num_heads))
        self.register_buffer("relative_position_index", relative_position_index(window_size))
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.attn_drop = nn.Dropout(attn_drop)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)
        trunc_normal_(self.relative_position_bias_table, std=0.02)

        self.fc = nn.Conv2d(3 * num_heads, self.kernel_conv ** 2, kernel_size=1, bias=True)
        self.dep_conv = _make_dep_conv(self.head_dim, dim, self.kernel_conv) if conv_path == "conv" else None
        self.rate1 = nn.Parameter(torch.empty(1))
        self.rate2 = nn.Parameter(torch.empty(1))
        _init_rates(self.rate1, self.rate2)

    def relative_position_bias(self) -> torch.Tensor:
        N = self.window_size[0] * self.window_size[1]
        bias = self.relative_position_bias_table[self.relative_position_index.view(-1)].view(N, N, -1)
        return bias.permute(2, 0, 1).contiguous()  # nH, N, N

    def conv_features(self, qkv: torch.Tensor, H: int, W: int) -> torch.Tensor:
        """``fc`` over the q/k/v x head axis: (B, H, W, 3C) -> (B, 9*hd, H, W), channel d*9 + i."""
        B = qkv.shape[0]
        f_all = qkv.reshape(B, H * W, 3 * self.num_heads, -1).permute(0, 2, 1, 3)  # B, 3nH, HW, hd
        return self.fc(f_all).permute(0, 3, 1, 2).reshape(B, self.kernel_conv ** 2 * self.head_dim, H, W)

    def conv_aggregate(self, f_conv: torch.Tensor) -> torch.Tensor:
        """Shift-and-sum of the 9 maps: ``dep_conv`` (learnable) or the fixed tensor shifts."""
        if self.conv_path == "shift":
            return shift_sum(f_conv, self.dim, self.head_dim, self.kernel_conv)
        return self.dep_conv(f_conv)

    def forward(self, x: torch.Tensor, H: int, W: int, mask: torch.Tensor | None = None) -> torch.Tensor:
        qkv = self.qkv(x)
        out_conv = self.conv_aggregate(self.conv_features(qkv, H, W)).permute(0, 2, 3, 1)  # B, H, W, C

        ws = self.window_size[0]
        windows = window_partition(qkv, ws)
        B_, C3 = windows.shape[0], windows.shape[-1]
        N, C = ws * ws, C3 // 3
        qkv = windows.view(B_, N, 3, self.num_heads, C // self.num_heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        attn = (q * self.scale) @ k.transpose(-2, -1)
        attn = attn + self.relative_position_bias().unsqueeze(0)
        if mask is not None:
            nW = mask.shape[0]
            attn = attn.view(B_ // nW, nW, self.num_heads, N, N) + mask.unsqueeze(1).unsqueeze(0)
            attn = attn.view(-1, self.num_heads, N, N)
        attn = self.attn_drop(attn.softmax(dim=-1))
        x = self.proj((attn @ v).transpose(1, 2).reshape(B_, N, C))
        x = window_reverse(x.view(-1, ws, ws, C), ws, H, W)

        return self.proj_drop(self.rate1 * x + self.rate2 * out_conv)

    def extra_repr(self) -> str:
        return f"dim={self.dim}, window_size={self.window_size}, num_heads={self.num_heads}, conv_path={self.conv_path}"


class SwinTransformerBlock(nn.Module):
    def __init__(self, dim: int, input_resolution: tuple[int, int], num_heads: int, window_size: int = 7,
                 shift_size: int = 0, mlp_ratio: float = 4.0, qkv_bias: bool = True, qk_scale=None,
                 drop: float = 0.0, attn_drop: float = 0.0, drop_path: float = 0.0, act_layer=nn.GELU,
                 norm_layer=nn.LayerNorm, conv_path: str = "conv"):
        super().__init__()
        self.dim = dim
        self.input_resolution = tuple(input_resolution)
        self.num_heads = num_heads
        self.mlp_ratio = mlp_ratio
        if min(self.input_resolution) <= window_size:  # one window covers the map: no partition, no shift
            shift_size = 0
            window_size = min(self.input_resolution)
        if not 0 <= shift_size < window_size:
            raise ValueError(f"shift_size {shift_size} must be in [0, {window_size})")
        self.window_size = window_size
        self.shift_size = shift_size

        self.norm1 = norm_layer(dim)
        self.attn = WindowAttentionACmix(dim, to_2tuple(window_size), num_heads, qkv_bias=qkv_bias,
                                         qk_scale=qk_scale, attn_drop=attn_drop, proj_drop=drop,
                                         conv_path=conv_path)
        self.drop_path = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()
        self.norm2 = norm_layer(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), act_layer=act_layer, drop=drop)
        mask = shifted_window_mask(self.input_resolution, window_size, shift_size) if shift_size > 0 else None
        self.register_buffer("attn_mask", mask)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        H, W = self.input_resolution
        B, L, C = x.shape
        shortcut = x
        x = self.norm1(x).view(B, H, W, C)
        # both paths of ACmix work on the shifted map, as in the official code
        if self.shift_size > 0:
            x = torch.roll(x, shifts=(-self.shift_size, -self.shift_size), dims=(1, 2))
        x = self.attn(x, H, W, mask=self.attn_mask)
        if self.shift_size > 0:
            x = torch.roll(x, shifts=(self.shift_size, self.shift_size), dims=(1, 2))
        x = shortcut + self.drop_path(x.view(B, H * W, C))
        return x + self.drop_path(self.mlp(self.norm2(x)))

    def extra_repr(self) -> str:
        return (f"dim={self.dim}, input_resolution={self.input_resolution}, num_heads={self.num_heads}, "
                f"window_size={self.window_size}, shift_size={self.shift_size}, mlp_ratio={self.mlp_ratio}")


class PatchMerging(nn.Module):
    def __init__(self, input_resolution: tuple[int, int], dim: int, norm_layer=nn.LayerNorm):
        super().__init__()
        self.input_resolution = tuple(input_resolution)
        self.dim = dim
        self.reduction = nn.Linear(4 * dim, 2 * dim, bias=False)
        self.norm = norm_layer(4 * dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        H, W = self.input_resolution
        B, L, C = x.shape
        x = x.view(B, H, W, C)
        x = torch.cat([x[:, 0::2, 0::2], x[:, 1::2, 0::2], x[:, 0::2, 1::2], x[:, 1::2, 1::2]], -1)
        return self.reduction(self.norm(x.view(B, -1, 4 * C)))


class BasicLayer(nn.Module):
    def __init__(self, dim: int, input_resolution: tuple[int, int], depth: int, num_heads: int, window_size: int,
                 mlp_ratio: float = 4.0, qkv_bias: bool = True, qk_scale=None, drop: float = 0.0,
                 attn_drop: float = 0.0, drop_path=0.0, norm_layer=nn.LayerNorm, downsample=None,
                 conv_path: str = "conv"):
        super().__init__()
        self.dim = dim
        self.input_resolution = tuple(input_resolution)
        self.depth = depth
        self.blocks = nn.ModuleList([
            SwinTransformerBlock(
                dim, input_resolution, num_heads, window_size=window_size,
                shift_size=0 if i % 2 == 0 else window_size // 2, mlp_ratio=mlp_ratio, qkv_bias=qkv_bias,
                qk_scale=qk_scale, drop=drop, attn_drop=attn_drop,
                drop_path=drop_path[i] if isinstance(drop_path, (list, tuple)) else drop_path,
                norm_layer=norm_layer, conv_path=conv_path)
            for i in range(depth)])
        self.downsample = downsample(input_resolution, dim=dim, norm_layer=norm_layer) if downsample else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for blk in self.blocks:
            x = blk(x)
        if self.downsample is not None:
            x = self.downsample(x)
        return x


class PatchEmbed(nn.Module):
    def __init__(self, img_size: int = 224, patch_size: int = 4, in_chans: int = 3, embed_dim: int = 96,
                 norm_layer=None):
        super().__init__()
        self.img_size = to_2tuple(img_size)
        self.patch_size = to_2tuple(patch_size)
        self.patches_resolution = [self.img_size[0] // self.patch_size[0], self.img_size[1] // self.patch_size[1]]
        self.num_patches = self.patches_resolution[0] * self.patches_resolution[1]
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size)
        self.norm = norm_layer(embed_dim) if norm_layer is not None else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if tuple(x.shape[-2:]) != self.img_size:
            raise ValueError(f"input size {tuple(x.shape[-2:])} does not match the model's {self.img_size}")
        x = self.proj(x).flatten(2).transpose(1, 2)
        return self.norm(x) if self.norm is not None else x


class SwinTransformerACmix(nn.Module):
    """Swin Transformer with ACmix attention (official ``SwinTransformer_acmix``)."""

    def __init__(self, img_size: int = 224, patch_size: int = 4, in_chans: int = 3, num_classes: int = 1000,
                 embed_dim: int = 96, depths=(2, 2, 6, 2), num_heads=(3, 6, 12, 24), window_size: int = 7,
                 mlp_ratio: float = 4.0, qkv_bias: bool = True, qk_scale=None, drop_rate: float = 0.0,
                 attn_drop_rate: float = 0.0, drop_path_rate: float = 0.1, norm_layer=nn.LayerNorm,
                 ape: bool = False, patch_norm: bool = True, conv_path: str = "conv"):
        super().__init__()
        self.num_classes = num_classes
        self.num_layers = len(depths)
        self.embed_dim = embed_dim
        self.ape = ape
        self.patch_norm = patch_norm
        self.num_features = int(embed_dim * 2 ** (self.num_layers - 1))
        self.mlp_ratio = mlp_ratio

        self.patch_embed = PatchEmbed(img_size, patch_size, in_chans, embed_dim,
                                      norm_layer=norm_layer if patch_norm else None)
        res = self.patch_embed.patches_resolution
        self.patches_resolution = res
        if ape:
            self.absolute_pos_embed = nn.Parameter(torch.zeros(1, self.patch_embed.num_patches, embed_dim))
            trunc_normal_(self.absolute_pos_embed, std=0.02)
        self.pos_drop = nn.Dropout(p=drop_rate)

        # stochastic depth decay rule; computed on the CPU so the model can be built on the meta device
        dpr = torch.linspace(0, drop_path_rate, sum(depths), device="cpu").tolist()
        self.layers = nn.ModuleList()
        for i in range(self.num_layers):
            self.layers.append(BasicLayer(
                dim=int(embed_dim * 2 ** i), input_resolution=(res[0] // 2 ** i, res[1] // 2 ** i),
                depth=depths[i], num_heads=num_heads[i], window_size=window_size, mlp_ratio=mlp_ratio,
                qkv_bias=qkv_bias, qk_scale=qk_scale, drop=drop_rate, attn_drop=attn_drop_rate,
                drop_path=dpr[sum(depths[:i]):sum(depths[:i + 1])], norm_layer=norm_layer,
                downsample=PatchMerging if i < self.num_layers - 1 else None, conv_path=conv_path))
        self.norm = norm_layer(self.num_features)
        self.avgpool = nn.AdaptiveAvgPool1d(1)
        self.head = nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()
        self.apply(self._init_weights)

    @staticmethod
    def _init_weights(m: nn.Module) -> None:
        if isinstance(m, nn.Linear):
            trunc_normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.constant_(m.bias, 0)
        elif isinstance(m, nn.LayerNorm):
            nn.init.constant_(m.bias, 0)
            nn.init.constant_(m.weight, 1.0)

    @torch.jit.ignore
    def no_weight_decay(self):
        return {"absolute_pos_embed"}

    @torch.jit.ignore
    def no_weight_decay_keywords(self):
        return {"relative_position_bias_table"}

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(x)
        if self.ape:
            x = x + self.absolute_pos_embed
        x = self.pos_drop(x)
        for layer in self.layers:
            x = layer(x)
        return self.norm(x)  # B, L, C

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = torch.flatten(self.avgpool(x.transpose(1, 2)), 1)
        return x if pre_logits else self.head(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


# --------------------------------------------------------------------------------------------- ResNet + ACmix

def position_grid(h: int, w: int, device=None, dtype=None) -> torch.Tensor:
    """(1, 2, h, w) grid of linspace(-1, 1) coordinates: channel 0 is x (width), channel 1 is y (height)."""
    loc_w = torch.linspace(-1.0, 1.0, w, device=device, dtype=dtype).unsqueeze(0).repeat(h, 1)
    loc_h = torch.linspace(-1.0, 1.0, h, device=device, dtype=dtype).unsqueeze(1).repeat(1, w)
    return torch.stack([loc_w, loc_h], 0).unsqueeze(0)


class ACmix(nn.Module):
    """ACmix in place of a ResNet bottleneck's 3x3 conv (official ``ACmix`` in ``test_bottleneck.py``).

    Attention path: stand-alone self-attention (SASA) over a reflect-padded k_att x k_att window with a relative
    positional encoding ``conv_p(grid)``; softmax over the window positions. Conv path: ``fc`` (1x1, no bias)
    over the 3*head axis, then ``dep_conv`` (grouped 3x3, groups = head_dim, no bias, with the block's stride).
    """

    def __init__(self, in_planes: int, out_planes: int, kernel_att: int = 7, head: int = 4, kernel_conv: int = 3,
                 stride: int = 1, dilation: int = 1, conv_path: str = "conv"):
        super().__init__()
        _check_conv_path(conv_path)
        self.in_planes = in_planes
        self.out_planes = out_planes
        self.head = head
        self.head_dim = out_planes // head
        self.kernel_att = kernel_att
        self.kernel_conv = kernel_conv
        self.stride = stride
        self.dilation = dilation
        self.conv_path = conv_path
        self.rate1 = nn.Parameter(torch.empty(1))
        self.rate2 = nn.Parameter(torch.empty(1))

        self.conv1 = nn.Conv2d(in_planes, out_planes, kernel_size=1)
        self.conv2 = nn.Conv2d(in_planes, out_planes, kernel_size=1)
        self.conv3 = nn.Conv2d(in_planes, out_planes, kernel_size=1)
        self.conv_p = nn.Conv2d(2, self.head_dim, kernel_size=1)

        self.padding_att = (dilation * (kernel_att - 1) + 1) // 2
        self.pad_att = nn.ReflectionPad2d(self.padding_att)
        self.unfold = nn.Unfold(kernel_size=kernel_att, padding=0, stride=stride)
        self.softmax = nn.Softmax(dim=1)

        self.fc = nn.Conv2d(3 * head, kernel_conv * kernel_conv, kernel_size=1, bias=False)
        self.dep_conv = (_make_dep_conv(self.head_dim, out_planes, kernel_conv, stride=stride)
                         if conv_path == "conv" else None)
        _init_rates(self.rate1, self.rate2)

    def positional_encoding(self, h: int, w: int, like: torch.Tensor) -> torch.Tensor:
        return self.conv_p(position_grid(h, w, device=like.device, dtype=like.dtype))  # 1, hd, h, w

    def conv_features(self, q, k, v) -> torch.Tensor:
        """``fc`` over cat(q, k, v) viewed as (b, 3*head, hd, hw): (b, 9*hd, h, w), channel d*9 + i."""
        b, _, h, w = q.shape
        f_all = self.fc(torch.cat([t.view(b, self.head, self.head_dim, h * w) for t in (q, k, v)], 1))
        return f_all.permute(0, 2, 1, 3).reshape(b, -1, h, w)

    def conv_aggregate(self, f_conv: torch.Tensor) -> torch.Tensor:
        if self.conv_path == "shift":
            return shift_sum(f_conv, self.out_planes, self.head_dim, self.kernel_conv, self.stride)
        return self.dep_conv(f_conv)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = self.conv1(x), self.conv2(x), self.conv3(x)
        scaling = float(self.head_dim) ** -0.5
        b, c, h, w = q.shape
        h_out, w_out = h // self.stride, w // self.stride
        kk = self.kernel_att * self.kernel_att

        pe = self.positional_encoding(h, w, q)
        q_att = q.view(b * self.head, self.head_dim, h, w) * scaling
        k_att = k.view(b * self.head, self.head_dim, h, w)
        v_att = v.view(b * self.head, self.head_dim, h, w)
        if self.stride > 1:
            q_att = q_att[:, :, ::self.stride, ::self.stride]
            q_pe = pe[:, :, ::self.stride, ::self.stride]
        else:
            q_pe = pe

        unfold_k = self.unfold(self.pad_att(k_att)).view(b * self.head, self.head_dim, kk, h_out, w_out)
        unfold_rpe = self.unfold(self.pad_att(pe)).view(1, self.head_dim, kk, h_out, w_out)
        att = (q_att.unsqueeze(2) * (unfold_k + q_pe.unsqueeze(2) - unfold_rpe)).sum(1)  # b*head, kk, h', w'
        att = self.softmax(att)
        unfold_v = self.unfold(self.pad_att(v_att)).view(b * self.head, self.head_dim, kk, h_out, w_out)
        out_att = (att.unsqueeze(1) * unfold_v).sum(2).view(b, self.out_planes, h_out, w_out)

        out_conv = self.conv_aggregate(self.conv_features(q, k, v))
        return self.rate1 * out_att + self.rate2 * out_conv

    def extra_repr(self) -> str:
        return (f"{self.in_planes}, {self.out_planes}, kernel_att={self.kernel_att}, head={self.head}, "
                f"kernel_conv={self.kernel_conv}, stride={self.stride}, conv_path={self.conv_path}")


class Bottleneck(nn.Module):
    """torchvision's ResNet v1.5 bottleneck (stride on the middle op) with ACmix as the middle op."""

    expansion = 4

    def __init__(self, inplanes: int, planes: int, k_att: int, head: int, k_conv: int, stride: int = 1,
                 downsample: nn.Module | None = None, groups: int = 1, base_width: int = 64, dilation: int = 1,
                 norm_layer=nn.BatchNorm2d, conv_path: str = "conv"):
        super().__init__()
        width = int(planes * (base_width / 64.0)) * groups
        self.conv1 = nn.Conv2d(inplanes, width, kernel_size=1, bias=False)
        self.bn1 = norm_layer(width)
        self.conv2 = ACmix(width, width, k_att, head, k_conv, stride=stride, dilation=dilation,
                           conv_path=conv_path)
        self.bn2 = norm_layer(width)
        self.conv3 = nn.Conv2d(width, planes * self.expansion, kernel_size=1, bias=False)
        self.bn3 = norm_layer(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


class ResNetACmix(nn.Module):
    """ResNet with ACmix bottlenecks (official ``ACmix_ResNet``)."""

    def __init__(self, layers=(3, 4, 6, 3), k_att: int = 7, head: int = 4, k_conv: int = 3,
                 num_classes: int = 1000, zero_init_residual: bool = False, groups: int = 1,
                 width_per_group: int = 64, in_chans: int = 3, conv_path: str = "conv"):
        super().__init__()
        self.num_classes = num_classes
        self.inplanes = 64
        self.groups = groups
        self.base_width = width_per_group
        self.conv1 = nn.Conv2d(in_chans, self.inplanes, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(self.inplanes)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        cfg = dict(k_att=k_att, head=head, k_conv=k_conv, conv_path=conv_path)
        self.layer1 = self._make_layer(64, layers[0], **cfg)
        self.layer2 = self._make_layer(128, layers[1], stride=2, **cfg)
        self.layer3 = self._make_layer(256, layers[2], stride=2, **cfg)
        self.layer4 = self._make_layer(512, layers[3], stride=2, **cfg)
        self.num_features = 512 * Bottleneck.expansion
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()

        # as in the official code this also re-initialises ACmix's dep_conv (its shift kernels), fc and 1x1 convs
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)):
                nn.init.constant_(m.weight, 1)
                nn.init.constant_(m.bias, 0)
        if zero_init_residual:
            for m in self.modules():
                if isinstance(m, Bottleneck):
                    nn.init.constant_(m.bn3.weight, 0)

    def _make_layer(self, planes: int, blocks: int, k_att: int, head: int, k_conv: int, stride: int = 1,
                    conv_path: str = "conv") -> nn.Sequential:
        downsample = None
        if stride != 1 or self.inplanes != planes * Bottleneck.expansion:
            downsample = nn.Sequential(
                nn.Conv2d(self.inplanes, planes * Bottleneck.expansion, kernel_size=1, stride=stride, bias=False),
                nn.BatchNorm2d(planes * Bottleneck.expansion),
            )
        kw = dict(groups=self.groups, base_width=self.base_width, conv_path=conv_path)
        layers = [Bottleneck(self.inplanes, planes, k_att, head, k_conv, stride, downsample, **kw)]
        self.inplanes = planes * Bottleneck.expansion
        layers += [Bottleneck(self.inplanes, planes, k_att, head, k_conv, **kw) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = torch.flatten(self.avgpool(x), 1)
        return x if pre_logits else self.fc(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


# --------------------------------------------------------------------------------------------- registration

def swin_feature_stages(model: nn.Module) -> list[tuple[str, str]]:
    """The last block of ``layers.i``, before its patch merging (tokens)."""
    return [(f"layers.{i}.blocks.{len(model.layers[i].blocks) - 1}", "tokens") for i in range(4)]


def resnet_feature_stages(model: nn.Module) -> list[tuple[str, str]]:
    return [(f"layer{i + 1}", "nchw") for i in range(4)]


_SWIN_SPEC = dict(family="acmix", input_multiple=224, ignore_keys=IGNORE_KEYS, crop_pct=0.875,
                  interpolation="bicubic", feature_stages=swin_feature_stages)
_RESNET_SPEC = dict(family="acmix", input_multiple=32, crop_pct=0.875, head_keys=("fc",),
                    interpolation="bilinear", feature_stages=resnet_feature_stages,
                    notes="no official weights were released (README: 'In process')")


def _swin(name: str, kwargs: dict) -> SwinTransformerACmix:
    return SwinTransformerACmix(**{**_SWIN_CFGS[name], **kwargs})


def _resnet(name: str, kwargs: dict) -> ResNetACmix:
    layers = _RESNET_LAYERS[name]
    size = kwargs.pop("img_size", None)  # any multiple of 32 that fits works without rebuilding
    if size is not None:
        side = min(to_2tuple(size))
        # ReflectionPad2d(3) needs every map ACmix sees to be at least 4x4; the smallest is stage 4 (1/32 of the
        # input) when it has more than one block, else the stride-2 block's input (1/16)
        smallest = 32 if layers[3] > 1 else 16
        if side // smallest < 4:
            raise HvitError(f"{name} needs inputs of at least {4 * smallest}x{4 * smallest} (its 7x7 attention "
                            f"reflect-pads maps of 1/{smallest} of the input by 3), not {side}")
    return ResNetACmix(layers=layers, **kwargs)


@register_model(params=28_649_908, paper_name="Swin-T + ACmix", aliases=("acmix_swin_tiny_patch4_window7_224",),
                weights="https://cloud.tsinghua.edu.cn/f/210c89a6f9eb4bd0beb6/", **_SWIN_SPEC)
def acmix_swin_t(**kwargs) -> SwinTransformerACmix:
    """Swin-T + ACmix (official config acmix_swin_tiny_patch4_window7_224.yaml)."""
    return _swin("acmix_swin_t", kwargs)


@register_model(params=50_345_080, paper_name="Swin-S + ACmix", aliases=("acmix_swin_small_patch4_window7_224",),
                weights="https://cloud.tsinghua.edu.cn/f/8bed555e75c840f8a00d/", **_SWIN_SPEC)
def acmix_swin_s(**kwargs) -> SwinTransformerACmix:
    """Swin-S + ACmix (official config acmix_swin_small_patch4_window7_224.yaml)."""
    return _swin("acmix_swin_s", kwargs)


@register_model(params=10_487_816, paper_name="ResNet-26 + ACmix", aliases=("acmix_resnet_26",), **_RESNET_SPEC)
def acmix_resnet26(**kwargs) -> ResNetACmix:
    """ResNet-26 + ACmix (official ``ACmix_ResNet(layers=[1, 2, 4, 1])``)."""
    return _resnet("acmix_resnet26", kwargs)


@register_model(params=14_410_896, paper_name="ResNet-38 + ACmix", aliases=("acmix_resnet_38",), **_RESNET_SPEC)
def acmix_resnet38(**kwargs) -> ResNetACmix:
    """ResNet-38 + ACmix (official ``ACmix_ResNet(layers=[2, 3, 5, 2])``)."""
    return _resnet("acmix_resnet38", kwargs)


@register_model(params=18_333_976, paper_name="ResNet-50 + ACmix", aliases=("acmix_resnet_50",), **_RESNET_SPEC)
def acmix_resnet50(**kwargs) -> ResNetACmix:
    """ResNet-50 + ACmix (official ``ACmix_ResNet(layers=[3, 4, 6, 3])``)."""
    return _resnet("acmix_resnet50", kwargs)
