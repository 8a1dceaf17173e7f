"""Family-agnostic rewrites."""
from __future__ import annotations

import torch.nn as nn

from .base import register_rewrite

_INPLACE_ACTS = (nn.ReLU, nn.ReLU6, nn.Hardswish, nn.Hardsigmoid, nn.SiLU, nn.LeakyReLU, nn.ELU, nn.Hardtanh)


@register_rewrite("explicit_attention", exact=False,
                  description="q@kᵀ → softmax → @v instead of fused scaled_dot_product_attention")
def explicit_attention(model: nn.Module, ctx) -> int:
    """Switch every module with a ``fused_attn`` flag (timm's convention, also used by our families) to the
    explicit matmul/softmax path: the same maths as the official code, visible to every converter and to FLOP
    counters, and free of the SDPA kernels that Core ML and older opsets lack."""
    count = 0
    for m in model.modules():
        if getattr(m, "fused_attn", False):
            m.fused_attn = False
            count += 1
    return count


@register_rewrite("out_of_place", exact=True,
                  description="in-place activations as out-of-place ops")
def out_of_place(model: nn.Module, ctx) -> int:
    """``nn.ReLU(inplace=True)`` and friends become out-of-place: functionalisation in ``torch.export`` and some
    converters handle in-place mutation poorly, and the cost at batch 1 is nil."""
    count = 0
    for m in model.modules():
        if isinstance(m, _INPLACE_ACTS) and getattr(m, "inplace", False):
            m.inplace = False
            count += 1
    return count
