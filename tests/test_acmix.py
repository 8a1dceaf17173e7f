"""ACmix: faithful build (counts, keys), official checkpoint formats, the shift form, rewrites, conversions."""
from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import hvit_deploy
from hvit_deploy import rewrite
from hvit_deploy.models.acmix import (
    ACmix,
    ResNetACmix,
    SwinTransformerACmix,
    WindowAttentionACmix,
    shift_kernels,
    shift_sum,
)
from hvit_deploy.recipes import load_recipe
from hvit_deploy.rewrites import get_rewrite
from hvit_deploy.testing import assert_rewrite_equal, randomize_norm_stats, save_training_checkpoint

PARAMS = {
    "acmix_swin_t": 28_649_908,
    "acmix_swin_s": 50_345_080,
    "acmix_resnet26": 10_487_816,
    "acmix_resnet38": 14_410_896,
    "acmix_resnet50": 18_333_976,
}
SWIN_PASSES = ["acmix.static_shapes", "acmix.roll_as_slices", "acmix.window_rank4", "acmix.precompute_bias",
               "acmix.fold_rates"]
RESNET_PASSES = ["acmix.static_shapes", "acmix.fold_rates", "acmix.precompute_pe", "acmix.rpe_into_keys",
                 "acmix.unfold_as_slices", "acmix.unfold_as_conv", "acmix.unfold_as_separable_conv",
                 "acmix.halo_attention"]
R26 = 64  # ResNet-26 works down to 64 (its single stage-4 block sees 4x4 before the stride); 38/50 need 128


def _meta(name: str) -> nn.Module:
    with torch.device("meta"):
        return hvit_deploy.get_spec(name).builder()


def _trained_looking(model: nn.Module, seed: int = 0) -> nn.Module:
    """Non-trivial BN statistics, rates, bias tables, dep_conv kernels away from the shift initialisation and
    LayerNorm affines, and ResNet weights scaled so the logits stay O(1-10)."""
    randomize_norm_stats(model, seed)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith(("relative_position_bias_table", "dep_conv.weight")):
                p.add_(torch.randn(p.shape, generator=g) * 0.2)
            elif name.endswith(("rate1", "rate2")):
                p.copy_(torch.rand(p.shape, generator=g) * 1.5 - 0.5)   # any sign
        for m in model.modules():
            if isinstance(m, nn.LayerNorm):
                m.weight.copy_(torch.rand(m.weight.shape, generator=g) + 0.5)
                m.bias.copy_(torch.randn(m.bias.shape, generator=g) * 0.2)
            elif isinstance(m, nn.BatchNorm2d):
                m.weight.mul_(0.3)
    return model


@pytest.fixture(scope="module")
def swin_t():
    torch.manual_seed(0)
    return _trained_looking(hvit_deploy.create_model("acmix_swin_t"))


@pytest.fixture(scope="module")
def resnet26():
    torch.manual_seed(0)
    return _trained_looking(hvit_deploy.create_model("acmix_resnet26", input_size=R26))


# ------------------------------------------------------------------------------------------ faithful build

@pytest.mark.parametrize("name", list(PARAMS))
def test_parameter_count(name):
    model = _meta(name)
    assert sum(p.numel() for p in model.parameters()) == PARAMS[name] == hvit_deploy.get_spec(name).params


def test_registered_names_and_sizes():
    assert hvit_deploy.list_models("acmix") == list(PARAMS)
    assert hvit_deploy.get_spec("acmix_swin_tiny_patch4_window7_224").name == "acmix_swin_t"
    for name in PARAMS:
        spec = hvit_deploy.get_spec(name)
        assert spec.family == "acmix" and spec.input_size == (3, 224, 224)
        assert spec.input_multiple == (224 if "swin" in name else 32)
    assert set(hvit_deploy.get_spec("acmix_swin_t").ignore_keys) == {"relative_position_index", "attn_mask"}
    with pytest.raises(hvit_deploy.HvitError, match="multiple of 224"):
        hvit_deploy.create_model("acmix_swin_t", input_size=256)
    m = hvit_deploy.create_model("acmix_swin_t", input_size=448)
    assert m.layers[3].blocks[1].shift_size == 3 and m.layers[3].blocks[1].attn_mask.shape == (4, 49, 49)


def test_timm_create_model():
    import timm

    m = timm.create_model("acmix_swin_t")
    assert isinstance(m, SwinTransformerACmix) and sum(p.numel() for p in m.parameters()) == PARAMS["acmix_swin_t"]
    m = timm.create_model("acmix_resnet26", num_classes=10)
    assert isinstance(m, ResNetACmix) and m.fc.out_features == 10
    with pytest.raises(RuntimeError, match="not downloaded"):
        timm.create_model("acmix_swin_t", pretrained=True)


def test_key_layout_swin_t():
    sd = _meta("acmix_swin_t").state_dict()
    assert len(sd) == 250
    shapes = {k: tuple(v.shape) for k, v in sd.items()}
    expected = {
        "patch_embed.proj.weight": (96, 3, 4, 4),
        "patch_embed.norm.weight": (96,),
        "layers.0.blocks.0.attn.qkv.weight": (288, 96),
        "layers.0.blocks.0.attn.qkv.bias": (288,),
        "layers.0.blocks.0.attn.relative_position_bias_table": (169, 3),
        "layers.0.blocks.0.attn.relative_position_index": (49, 49),
        "layers.0.blocks.0.attn.fc.weight": (9, 9, 1, 1),
        "layers.0.blocks.0.attn.fc.bias": (9,),
        "layers.0.blocks.0.attn.dep_conv.weight": (96, 9, 3, 3),   # groups = head_dim = 32
        "layers.0.blocks.0.attn.rate1": (1,),
        "layers.0.blocks.0.attn.rate2": (1,),
        "layers.0.blocks.1.attn_mask": (64, 49, 49),
        "layers.1.blocks.1.attn_mask": (16, 49, 49),
        "layers.2.blocks.5.attn_mask": (4, 49, 49),
        "layers.3.blocks.0.attn.fc.weight": (9, 72, 1, 1),
        "layers.3.blocks.1.attn.dep_conv.weight": (768, 9, 3, 3),
        "layers.0.downsample.reduction.weight": (192, 384),
        "layers.2.downsample.norm.weight": (1536,),
        "norm.weight": (768,),
        "head.weight": (1000, 768),
    }
    for k, shape in expected.items():
        assert shapes[k] == shape, k
    assert not any(k.endswith("dep_conv.bias") for k in sd)
    assert "layers.3.blocks.1.attn_mask" not in sd and "layers.0.blocks.0.attn_mask" not in sd  # no shift there
    assert sum(k.endswith("attn_mask") for k in sd) == 5 and sum(k.endswith("relative_position_index") for k in sd) == 12
    assert not any("downsample" in k for k in sd if k.startswith("layers.3"))
    assert all(m.eps == 1e-5 for m in _meta("acmix_swin_t").modules() if isinstance(m, nn.LayerNorm))


def test_key_layout_resnet26():
    sd = _meta("acmix_resnet26").state_dict()
    assert len(sd) == 264
    shapes = {k: tuple(v.shape) for k, v in sd.items()}
    expected = {
        "conv1.weight": (64, 3, 7, 7),
        "layer1.0.conv1.weight": (64, 64, 1, 1),
        "layer1.0.conv2.rate1": (1,),
        "layer1.0.conv2.conv1.weight": (64, 64, 1, 1),
        "layer1.0.conv2.conv3.bias": (64,),
        "layer1.0.conv2.conv_p.weight": (16, 2, 1, 1),
        "layer1.0.conv2.fc.weight": (9, 12, 1, 1),
        "layer1.0.conv2.dep_conv.weight": (64, 9, 3, 3),            # groups = head_dim = 16
        "layer3.0.conv2.dep_conv.weight": (256, 9, 3, 3),
        "layer1.0.downsample.0.weight": (256, 64, 1, 1),
        "layer4.0.conv3.weight": (2048, 512, 1, 1),
        "fc.weight": (1000, 2048),
    }
    for k, shape in expected.items():
        assert shapes[k] == shape, k
    assert not any(k.endswith(("dep_conv.bias", "conv2.fc.bias")) for k in sd)
    m = _meta("acmix_resnet26")
    assert [len(getattr(m, f"layer{i}")) for i in range(1, 5)] == [1, 2, 4, 1]
    assert [m.layer2[0].conv2.stride, m.layer2[1].conv2.stride, m.layer2[0].conv2.dep_conv.stride] == [2, 1, (2, 2)]


def test_forward_shapes_and_sizes(resnet26):
    with pytest.raises(hvit_deploy.HvitError, match="at least 128x128"):
        hvit_deploy.create_model("acmix_resnet38", input_size=96)
    with pytest.raises(hvit_deploy.HvitError, match="at least 64x64"):
        hvit_deploy.create_model("acmix_resnet26", input_size=32)
    with torch.no_grad():
        assert resnet26(torch.randn(2, 3, 96, 96)).shape == (2, 1000)   # any multiple of 32 that fits
        m = hvit_deploy.create_model("acmix_resnet50", input_size=128)
        assert m(torch.randn(1, 3, 128, 128)).shape == (1, 1000)


def test_swin_dep_conv_starts_as_shift_kernels_resnet_is_reinitialised():
    attn = _meta("acmix_swin_t").layers[0].blocks[0].attn
    assert attn.dep_conv.bias is None and attn.dep_conv.groups == 32
    torch.manual_seed(0)
    swin = hvit_deploy.get_spec("acmix_swin_t").builder()
    w = swin.layers[1].blocks[0].attn.dep_conv.weight
    assert torch.equal(w, shift_kernels(3).expand(192, -1, -1, -1))
    assert swin.layers[1].blocks[0].attn.rate1.item() == 0.5
    # the official ResNet init loop runs kaiming_normal_ over every Conv2d, dep_conv included
    r = hvit_deploy.get_spec("acmix_resnet26").builder()
    assert not torch.equal(r.layer1[0].conv2.dep_conv.weight, shift_kernels(3).expand(64, -1, -1, -1))


# ------------------------------------------------------------------------------------------- checkpoints

def _perturbed_state_dict(name: str, seed: int) -> dict:
    torch.manual_seed(seed)
    m = hvit_deploy.get_spec(name).builder()
    with torch.no_grad():
        for p in m.parameters():
            p.add_(torch.randn_like(p) * 0.01)
    return m.state_dict()


@pytest.mark.parametrize("with_buffers", [True, False])
def test_swin_training_file_loads_strictly(tmp_path, with_buffers):
    sd = _perturbed_state_dict("acmix_swin_t", 1)
    if not with_buffers:
        sd = {k: v for k, v in sd.items() if not k.endswith(("relative_position_index", "attn_mask"))}
        assert len(sd) == 250 - 17
    path = save_training_checkpoint(tmp_path / "ckpt_epoch_299.pth", sd, container="model", with_yacs_config=True,
                                    extra={"optimizer": {"state": {}, "param_groups": []}, "lr_scheduler": {}})
    got = hvit_deploy.create_model("acmix_swin_t", checkpoint=path).state_dict()
    assert len(got) == 250 and all(torch.equal(got[k], sd[k]) for k in sd)


def test_resnet_ddp_file_loads_strictly(tmp_path):
    sd = _perturbed_state_dict("acmix_resnet26", 2)
    path = save_training_checkpoint(tmp_path / "checkpoint.pth.tar", sd, container="state_dict", prefix="module.",
                                    extra={"arch": "ACmix_ResNet", "best_acc1": torch.tensor(76.1),
                                           "optimizer": {"state": {}, "param_groups": []}, "scheduler": {}})
    got = hvit_deploy.create_model("acmix_resnet26", checkpoint=path).state_dict()
    assert got.keys() == sd.keys() and all(torch.equal(got[k], sd[k]) for k in sd)


def test_wrong_depth_is_refused(tmp_path):
    path = save_training_checkpoint(tmp_path / "r38.pth", _meta_free("acmix_resnet38"), container="state_dict",
                                    prefix="module.")
    with pytest.raises(hvit_deploy.HvitError, match="unexpected key"):
        hvit_deploy.create_model("acmix_resnet26", checkpoint=path)


def _meta_free(name):
    return {k: torch.zeros(v.shape) for k, v in _meta(name).state_dict().items()}


# ------------------------------------------------------------------------------------------- shift form

def _naive_shift_sum(f, out_channels, groups, stride):
    """The definition, one pixel at a time: output (o, y, x) = sum_i f[g*9 + i, s*y + i//3 - 1, s*x + i%3 - 1]."""
    _, _, H, W = f.shape
    ho, wo = (H - 1) // stride + 1, (W - 1) // stride + 1
    out = torch.zeros(f.shape[0], out_channels, ho, wo)
    for o in range(out_channels):
        g = o // (out_channels // groups)
        for y in range(ho):
            for x in range(wo):
                for i in range(9):
                    yy, xx = stride * y + i // 3 - 1, stride * x + i % 3 - 1
                    if 0 <= yy < H and 0 <= xx < W:
                        out[:, o, y, x] += f[:, g * 9 + i, yy, xx]
    return out


@pytest.mark.parametrize("stride", [1, 2])
def test_shift_sum_is_the_shift_and_the_one_hot_group_conv(stride):
    f = torch.randn(2, 4 * 9, 6, 8)
    got = shift_sum(f, 12, 4, 3, stride)
    assert torch.allclose(got, _naive_shift_sum(f, 12, 4, stride), atol=1e-6, rtol=0)
    kernels = shift_kernels(3).unsqueeze(0).expand(12, -1, -1, -1).reshape(12, 9, 3, 3)
    assert torch.equal(got, F.conv2d(f, kernels, stride=stride, padding=1, groups=4))


@pytest.mark.parametrize("name,size", [("acmix_swin_t", 224), ("acmix_resnet26", R26)])
def test_shift_form_and_group_conv_rewrite(name, size):
    torch.manual_seed(0)
    m = _trained_looking(hvit_deploy.create_model(name, input_size=size, conv_path="shift"))
    acmix = [a for a in m.modules() if isinstance(a, (WindowAttentionACmix, ACmix))]
    assert all(a.conv_path == "shift" and a.dep_conv is None for a in acmix)
    assert sum(p.numel() for p in m.parameters()) == PARAMS[name] - sum(a.dim * 81 if isinstance(
        a, WindowAttentionACmix) else a.out_planes * 81 for a in acmix)
    r = assert_rewrite_equal(m, "onnx", ["acmix.shift_to_group_conv"], atol=0, rtol=0, inputs=1)
    assert r.hvit_rewrite_counts["acmix.shift_to_group_conv"] == len(acmix)
    assert all(a.conv_path == "conv" and not a.dep_conv.weight.requires_grad for a in r.modules()
               if isinstance(a, (WindowAttentionACmix, ACmix)))
    # the official form with its dep_conv at the shift initialisation computes the same numbers
    official = hvit_deploy.create_model(name, input_size=size)
    own = official.state_dict()
    official.load_state_dict({**own, **r.state_dict()})
    x = torch.randn(1, 3, size, size)
    with torch.no_grad():
        assert torch.equal(official(x), m(x))
    # the whole recipe also holds for the shift form
    for backend in ("onnx", "openvino"):
        assert_rewrite_equal(m, backend, inputs=1, atol=1e-6, rtol=1e-5)


# ---------------------------------------------------------------------------------------------- rewrites

def _exact(name):
    return get_rewrite(name).exact


@pytest.mark.parametrize("name", SWIN_PASSES)
def test_swin_rewrite_alone(swin_t, name):
    atol = 0 if _exact(name) else 1e-6
    r = assert_rewrite_equal(swin_t, "onnx", [name], atol=atol, rtol=0 if atol == 0 else 1e-5, inputs=1)
    expect = {"acmix.static_shapes": 1 + 12 + 12 + 3, "acmix.roll_as_slices": 5}.get(name, 12)
    assert r.hvit_rewrite_counts[name] == expect


@pytest.mark.parametrize("name", RESNET_PASSES)
def test_resnet_rewrite_alone(resnet26, name):
    atol = 0 if _exact(name) else 1e-6
    r = assert_rewrite_equal(resnet26, "onnx", [name], atol=atol, rtol=0 if atol == 0 else 1e-5, inputs=1)
    # at 64 the last block's output is 2x2, which has no halo tile: it keeps the unfold
    assert r.hvit_rewrite_counts[name] == (7 if name == "acmix.halo_attention" else 8)


def test_halo_tiles_and_mask():
    from hvit_deploy.rewrites.acmix import halo_mask, halo_tile
    assert [halo_tile(s, s) for s in (56, 28, 14, 7, 4, 2, 9)] == [8, 7, 7, 7, 4, None, None]
    assert halo_tile(56, 28) == 7
    m = halo_mask(2, 2, 3)                       # tile 2, stride 2, window 3: region side 2*1 + 3 = 5
    assert tuple(m.shape) == (4, 25) and set(m.unique().tolist()) == {0.0, -1e9}
    inside = (m == 0).reshape(2, 2, 5, 5)
    assert int(inside.sum()) == 4 * 9            # every query sees exactly its own 3x3 window
    assert inside[1, 1, 2:5, 2:5].all() and not inside[1, 1, :2].any() and not inside[1, 1, :, :2].any()
    assert inside[0, 1, 0:3, 2:5].all() and not inside[0, 1, 3:].any()


def test_halo_attention_at_224_every_block():
    """At 224 every block gets tiles (56 -> 8, the stride-2 blocks' 28, 14 and 7 -> 7, their region 19 wide),
    and the whole model matches the original; the unfold and its 49-fold copies are gone from the graph."""
    torch.manual_seed(1)
    m = _trained_looking(hvit_deploy.create_model("acmix_resnet26"))
    names = ["acmix.static_shapes", "acmix.precompute_pe", "acmix.fold_rates", "acmix.halo_attention"]
    r = assert_rewrite_equal(m, "onnx", names, atol=1e-6, rtol=1e-5, inputs=1)
    assert r.hvit_rewrite_counts["acmix.halo_attention"] == 8
    tiles = [(a.stride, a.halo_tile, tuple(a.halo_mask.mask.shape)) for a in r.modules() if hasattr(a, "halo_tile")]
    assert tiles[:3] == [(1, 8, (64, 196)), (2, 7, (49, 361)), (1, 7, (49, 169))]
    kinds = _node_kinds(torch.jit.trace(r, torch.randn(1, 3, 224, 224)))
    assert "aten::im2col" not in kinds and "aten::matmul" in kinds


def test_family_passes_leave_the_other_family_alone(swin_t, resnet26):
    assert rewrite(swin_t, "onnx", names=RESNET_PASSES[2:]).hvit_rewrite_counts == dict.fromkeys(RESNET_PASSES[2:], 0)
    names = ["acmix.roll_as_slices", "acmix.window_rank4", "acmix.precompute_bias", "acmix.shift_to_group_conv"]
    assert rewrite(resnet26, "onnx", names=names).hvit_rewrite_counts == dict.fromkeys(names, 0)


def test_rewrite_effects(swin_t, resnet26):
    r = rewrite(swin_t, "onnx", names=["acmix.precompute_bias", "acmix.fold_rates"])
    keys = r.state_dict().keys()
    assert not any(k.endswith(("relative_position_index", "attn_mask", "relative_position_bias_table", "rate1",
                               "rate2")) for k in keys)
    assert tuple(r.layers[0].blocks[1].attn.attn_bias.shape) == (64, 3, 49, 49)   # bias + mask
    assert tuple(r.layers[0].blocks[0].attn.attn_bias.shape) == (1, 3, 49, 49)
    assert "layers.0.blocks.0.attn.rate1" in swin_t.state_dict()                  # the original is untouched
    r = rewrite(resnet26, "onnx", names=["acmix.precompute_pe", "acmix.fold_rates"])
    a = r.layer1[0].conv2
    assert not hasattr(a, "conv_p") and a.pe.dtype == torch.float32 and tuple(a.pe.shape) == (1, 16, 16, 16)
    assert not any(k.endswith(("conv_p.weight", "rate1", "rate2")) for k in r.state_dict())


def test_fold_rates_with_zero_rate1(resnet26):
    m = rewrite(resnet26, "onnx", names=[])  # a copy
    with torch.no_grad():
        m.layer2[1].conv2.rate1.zero_()
    r = assert_rewrite_equal(m, "onnx", ["acmix.fold_rates"], atol=1e-6, rtol=1e-5, inputs=1)
    assert float(r.layer2[1].conv2.rate1_mul) == 0.0


def test_roll_frame_matters(swin_t):
    """Both ACmix paths work on the shifted map: moving the conv path out of that frame changes the output."""
    blk = swin_t.layers[0].blocks[1]
    z = torch.randn(1, 56 * 56, 96)
    with torch.no_grad():
        x = blk.norm1(z).view(1, 56, 56, 96)
        shifted = torch.roll(x, (-3, -3), (1, 2))
        a = blk.attn
        conv_shifted = a.conv_aggregate(a.conv_features(a.qkv(shifted), 56, 56)).permute(0, 2, 3, 1)
        conv_plain = a.conv_aggregate(a.conv_features(a.qkv(x), 56, 56)).permute(0, 2, 3, 1)
        moved = torch.roll(conv_plain, (-3, -3), (1, 2))
    differs = (moved - conv_shifted).abs().amax(-1) > 1e-5
    assert 300 < int(differs.sum()) < 56 * 56 // 4   # the borders and the seam of the shift, not the interior


@pytest.mark.parametrize("backend", ["onnx", "openvino", "coreml"])
def test_recipe_equal_per_backend(swin_t, resnet26, backend):
    names = load_recipe("acmix").rewrites_for(backend, "acmix_swin_t")
    assert names[0] == "acmix.static_shapes"
    r = assert_rewrite_equal(swin_t, backend, atol=1e-6, rtol=1e-5, inputs=1)
    assert r.hvit_rewrites == names
    assert_rewrite_equal(resnet26, backend, atol=1e-6, rtol=1e-5, inputs=1)


@pytest.mark.parametrize("name,size", [("acmix_swin_s", 224), ("acmix_resnet38", 128), ("acmix_resnet50", 128)])
def test_recipe_equal_bigger_variants(name, size):
    torch.manual_seed(0)
    m = _trained_looking(hvit_deploy.create_model(name, input_size=size))
    assert_rewrite_equal(m, "coreml", inputs=1, atol=1e-6, rtol=1e-5)


def _node_kinds(traced) -> set[str]:
    return {n.kind() for n in traced.inlined_graph.nodes()}


def test_official_forward_reads_sizes(resnet26):
    """The hazard static_shapes removes: shape reads cast to ints (coremltools fails on them with numpy >= 2.3)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        kinds = _node_kinds(torch.jit.trace(resnet26, torch.randn(1, 3, R26, R26)))
    assert {"aten::size", "aten::Int", "aten::linspace", "aten::im2col"} <= kinds


# ------------------------------------------------------------------------------------------ conversions

def _onnx(model, x, path):
    import onnx

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (x,), str(path), opset_version=18, dynamo=False, input_names=["input"])
    return onnx.shape_inference.infer_shapes(onnx.load(str(path)))


def _doubles(graph) -> list[str]:
    """Names of DOUBLE tensors: initializers, typed values, Cast targets and constant attributes."""
    from onnx import TensorProto

    d = TensorProto.DOUBLE
    found = [t.name for t in graph.initializer if t.data_type == d]
    found += [v.name for v in list(graph.value_info) + list(graph.input) + list(graph.output)
              if v.type.tensor_type.elem_type == d]
    for n in graph.node:
        for a in n.attribute:
            if (a.name == "to" and a.i == d) or (a.HasField("t") and a.t.data_type == d):
                found.append(n.name)
    return found


@pytest.mark.parametrize("which", ["swin", "resnet"])
def test_onnx_runs_in_onnxruntime(swin_t, resnet26, which, tmp_path):
    import onnxruntime as ort

    model, size = (swin_t, 224) if which == "swin" else (resnet26, R26)
    x = torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(3))
    if which == "resnet":  # the official form exports its linspace grid as DOUBLE and ONNX Runtime refuses it
        assert _doubles(_onnx(model, x, tmp_path / "official.onnx").graph)
    graph = _onnx(rewrite(model, "onnx"), x, tmp_path / "recipe.onnx").graph
    assert not _doubles(graph)
    ops = {n.op_type for n in graph.node}
    assert not ops & {"Shape", "Gather", "Col2Im", "Range"}   # (reflect pads build their pads from constants)
    sess = ort.InferenceSession(str(tmp_path / "recipe.onnx"), providers=["CPUExecutionProvider"])
    y = sess.run(None, {"input": x.numpy()})[0]
    with torch.no_grad():
        ref = model(x).numpy()
    assert np.abs(y - ref).max() <= 1e-5 * max(1.0, float(np.abs(ref).max()))


@pytest.mark.parametrize("which", ["swin", "resnet"])
def test_openvino_numeric(swin_t, resnet26, which):
    import openvino as ov

    model, size = (swin_t, 224) if which == "swin" else (resnet26, R26)
    x = torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(4))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ov_model = ov.convert_model(rewrite(model, "openvino"), example_input=x)
    compiled = ov.Core().compile_model(ov_model, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    y = compiled({0: x.numpy()})[compiled.output(0)]
    with torch.no_grad():
        ref = model(x).numpy()
    assert np.abs(y - ref).max() <= 1e-5 * max(1.0, float(np.abs(ref).max()))


@pytest.mark.parametrize("which", ["swin", "resnet"])
def test_coreml_converts(swin_t, resnet26, which):
    ct = pytest.importorskip("coremltools")
    model, size = (swin_t, 224) if which == "swin" else (resnet26, R26)
    x = torch.randn(1, 3, size, size)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(rewrite(model, "coreml"), x)  # the capture that needs static shapes
        assert not _node_kinds(traced) & {"aten::size", "aten::Int", "aten::roll", "aten::im2col", "aten::linspace"}
        ml = ct.convert(traced, inputs=[ct.TensorType(name="input", shape=tuple(x.shape))], convert_to="mlprogram",
                        minimum_deployment_target=ct.target.iOS16, compute_precision=ct.precision.FLOAT32)
    ops = [op.op_type for f in ml._mil_program.functions.values() for op in f.operations]
    assert "gather" not in ops and "gather_nd" not in ops        # roll and unfold as slices and a conv
    assert max(len(op.outputs[0].shape) for f in ml._mil_program.functions.values() for op in f.operations
               if op.outputs and op.outputs[0].shape is not None) <= 5
    n_acmix = 12 if which == "swin" else 8
    # Swin: patch embed + fc + dep_conv per block; ResNet: stem, 4 downsample, conv1/conv3 per bottleneck, and per
    # ACmix q/k/v, fc and dep_conv; the 2x2 last block has no halo tile and keeps its three one-hot unfold convs (k,
    # v and the positional encoding), the other seven attend by matmuls over tiles
    assert ops.count("conv") == (1 + 2 * n_acmix if which == "swin" else 1 + 4 + 2 * 8 + 5 * n_acmix + 3)
    if which == "resnet":
        assert ops.count("matmul") == 2 * 7


# --------------------------------------------------------------------------------- through the exporter

@pytest.mark.slow
def test_exporter_round_trip_resnet26(tmp_path):
    """The whole pipeline once at the full 224 for the smallest model: build, rewrite, export, validate."""
    from hvit_deploy.export import ExportSession

    session = ExportSession("acmix_resnet26")
    session.inputs = session.inputs[:1]
    session.references = session.references[:1]
    for fmt in ("onnx", "openvino"):
        r = session.export(fmt, tmp_path)
        assert r.ok, r.error
        assert r.rewrites == load_recipe("acmix").rewrites_for(fmt)
        assert r.validation["max_abs"] < 1e-4 and r.validation["top1"] == 1.0


def test_pt2e_recipe_keeps_the_halo_masks_add_float(resnet26):
    """Both PT2E quantizers annotate adds; the recipe's ``pt2e_modules_in_fp`` names the window mask's module, so
    the graph the quantizer sees leaves exactly those adds (one per tiled block) out, and nothing else on
    ExecuTorch."""
    from hvit_deploy.quantize import pt2e_int8

    r = rewrite(resnet26, "onnx")   # the PT2E formats take the ONNX list
    nodes = pt2e_int8.graph_nodes(pt2e_int8.export_graph(r, torch.randn(1, 3, R26, R26)))
    q = load_recipe("acmix").quantization
    kept = pt2e_int8.nodes_matching(q.pt2e_modules_in_fp["executorch"], nodes)
    ops = {name: (op, mod) for name, op, mod in nodes}
    assert len(kept) == 7 and {ops[n][0] for n in kept} == {"add"}
    assert {ops[n][1] for n in kept} == {f"{a}.halo_mask" for a, m in r.named_modules() if getattr(m, "halo_tile", 0)}
    lite = pt2e_int8.nodes_matching(q.pt2e_modules_in_fp["litert"], nodes)
    assert set(kept) < set(lite) and sum(ops[n][0] == "conv2d" for n in lite) == 3 * 8


def test_onnx_int8_recipe_quantizes_relus_and_adds_but_keeps_the_conv_path_and_masks_float(resnet26, tmp_path):
    """ACmix's ONNX INT8 recipe: the ReLUs fold into their convs' ranges and the branch adds become quantized adds,
    while the conv path's fc and dep_conv (slower in INT8 on ONNX Runtime) and the window masks' adds (-1e9 is no
    range) are matched by name and stay float, and nothing else is (no consumer of fc's output by its tensor name)."""
    import onnx
    import onnxruntime as ort

    from hvit_deploy.quantize.onnx_int8 import quantize_onnx

    x = torch.randn(1, 3, R26, R26, generator=torch.Generator().manual_seed(5))
    r = rewrite(resnet26, "onnx")
    _onnx(r, x, tmp_path / "fp32.onnx")
    calib = np.random.default_rng(0).standard_normal((3, 3, R26, R26)).astype(np.float32)
    opts = load_recipe("acmix").quantization.model_copy(update={"onnx_pre_process": False})
    s = quantize_onnx(tmp_path / "fp32.onnx", tmp_path / "int8.onnx", calib, 1, opts)
    assert {"Relu", "Add", "Mul"} <= set(s["op_types_quantized"])
    g = onnx.load(str(tmp_path / "int8.onnx")).graph
    op = {n.name: n.op_type for n in g.node}
    kept = set(s["recipe_nodes_to_exclude"]["nodes"])
    unfolds = {n.name for n in g.node if any("unfold_kernels" in i for i in n.input)}   # the untiled 2x2 block
    roles = sorted(n.split("/conv2/")[1].split("/")[0] for n in kept - unfolds)
    assert roles == ["dep_conv"] * 8 + ["fc"] * 8 + ["halo_mask"] * 7
    assert {op[n] for n in kept - unfolds if "halo_mask" in n} == {"Add"} and unfolds and unfolds <= kept
    producer = {o: n.op_type for n in g.node for o in n.output}
    dq_fed = {n.name for n in g.node if any(producer.get(i) == "DequantizeLinear" for i in n.input)}
    inits = {t.name for t in g.initializer}
    dq_weights = {n.output[0] for n in g.node if n.op_type == "DequantizeLinear" and n.input[0] in inits}
    assert not [n.name for n in g.node if n.name in kept and set(n.input) & dq_weights]   # float weights and mask
    assert all(set(n.input) & dq_weights for n in g.node if n.op_type == "Conv" and n.name not in kept)
    # the halo attention's output MatMuls (softmax probabilities times values) quantized by the recipe's name scope
    assert s["attention_output_in_fp"] == [] and len(s["attention_output_int8"]) == 7
    assert set(s["attention_output_int8"]) <= dq_fed and {op[n] for n in s["attention_output_int8"]} == {"MatMul"}
    branch_adds = [n for n in op if n.endswith("/conv2/Add")]
    assert len(branch_adds) == 8 and set(branch_adds) <= dq_fed                     # QLinearAdd on ONNX Runtime
    fp32_relus = sum(n.op_type == "Relu" for n in onnx.load(str(tmp_path / "fp32.onnx")).graph.node)
    assert sum(v == "Relu" for v in op.values()) < fp32_relus                        # folded into the conv ranges
    y = ort.InferenceSession(str(tmp_path / "int8.onnx"), providers=["CPUExecutionProvider"]).run(
        None, {"input": x.numpy()})[0].ravel()
    with torch.no_grad():
        ref = resnet26(x).numpy().ravel()
    assert np.isfinite(y).all() and float(y @ ref / np.linalg.norm(y) / np.linalg.norm(ref)) > 0.95
