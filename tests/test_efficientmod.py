"""EfficientMod: faithful build (counts, keys, block structure), checkpoint formats, rewrites, conversions."""
from __future__ import annotations

import argparse
import warnings

import numpy as np
import pytest
import torch
import torch.nn as nn

import hvit_deploy
from hvit_deploy import rewrite
from hvit_deploy.errors import CheckpointError
from hvit_deploy.models.efficientmod import Attention, AttentionBlock, BasicBlock, EfficientMod, Mlp
from hvit_deploy.recipes import load_recipe
from hvit_deploy.rewrites import get_rewrite
from hvit_deploy.testing import assert_rewrite_equal, randomize_norm_stats

PARAMS = {
    "efficientmod_xxs": 4_736_264,
    "efficientmod_xs": 6_627_544,
    "efficientmod_s": 12_897_184,
    "efficientmod_s_conv": 12_872_336,
}
PREFIX = ["efficientmod.fold_layerscale", "explicit_attention", "efficientmod.static_shapes"]


def _trained_looking(model: nn.Module, seed: int = 0) -> nn.Module:
    """Random LayerScale, LayerNorm affine and biases, so folds and layouts are tested on non-trivial values."""
    randomize_norm_stats(model, seed)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.LayerNorm):
                m.weight.copy_(torch.rand(m.weight.shape, generator=g) + 0.5)
                m.bias.copy_(torch.randn(m.bias.shape, generator=g) * 0.2)
            elif isinstance(m, (nn.Linear, nn.Conv2d)) and m.bias is not None:
                m.bias.copy_(torch.randn(m.bias.shape, generator=g) * 0.05)
    return model


@pytest.fixture(scope="module")
def xxs():
    torch.manual_seed(0)
    return _trained_looking(hvit_deploy.create_model("efficientmod_xxs"))


@pytest.fixture(scope="module")
def x():
    return torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(1))


def _meta(name: str) -> EfficientMod:
    with torch.device("meta"):
        return hvit_deploy.get_spec(name).builder()


# ------------------------------------------------------------------------------------------ faithful build

@pytest.mark.parametrize("name", list(PARAMS))
def test_parameter_count(name):
    model = _meta(name)
    assert sum(p.numel() for p in model.parameters()) == PARAMS[name] == hvit_deploy.get_spec(name).params


def test_registered_names_and_aliases():
    assert hvit_deploy.list_models("efficientmod") == list(PARAMS)
    for official, canonical in (("efficientMod_xxs", "efficientmod_xxs"), ("efficientMod_s_Conv",
                                                                          "efficientmod_s_conv")):
        assert hvit_deploy.get_spec(official).name == canonical
    spec = hvit_deploy.get_spec("efficientmod_xxs")
    assert spec.family == "efficientmod" and spec.input_size == (3, 224, 224) and spec.input_multiple == 32


def test_timm_create_model():
    import timm

    m = timm.create_model("efficientmod_xxs")
    assert isinstance(m, EfficientMod) and sum(p.numel() for p in m.parameters()) == PARAMS["efficientmod_xxs"]
    m = timm.create_model("efficientMod_xxs", num_classes=10)
    assert m.head.out_features == 10
    with pytest.raises(RuntimeError, match="not downloaded"):
        timm.create_model("efficientmod_xxs", pretrained=True)


def test_key_layout_xxs():
    sd = _meta("efficientmod_xxs").state_dict()
    assert len(sd) == 209
    assert not list(_meta("efficientmod_xxs").buffers())
    shapes = {k: tuple(v.shape) for k, v in sd.items()}
    expected = {
        "patch_embed.proj.weight": (32, 3, 7, 7),
        "patch_embed.norm.weight": (32,),
        "layers.0.blocks.0.gamma_1": (32,),
        "layers.0.blocks.0.mlp.fc1.weight": (32, 32),            # r = 1
        "layers.0.blocks.1.mlp.fc1.weight": (192, 32),           # r = 6
        "layers.0.blocks.1.mlp.fc2.weight": (32, 192),
        "layers.0.blocks.1.mlp.context_layer.f.weight": (32, 32),
        "layers.0.blocks.1.mlp.context_layer.g.weight": (32, 32),
        "layers.0.blocks.1.mlp.context_layer.context_list.0.weight": (32, 1, 7, 7),
        "layers.0.downsample.proj.weight": (64, 32, 3, 3),
        "layers.2.downsample.norm.bias": (256,),
        "layers.2.blocks.6.norm1.weight": (128,),                # the attention block continues the numbering
        "layers.2.blocks.6.attn.qkv.weight": (768, 128),
        "layers.2.blocks.6.attn.proj.weight": (128, 256),
        "layers.2.blocks.6.mlp.fc1.weight": (512, 128),
        "layers.3.blocks.3.attn.qkv.weight": (768, 256),
        "norm.weight": (256,),
        "head.weight": (1000, 256),
    }
    for k, shape in expected.items():
        assert shapes[k] == shape, k
    assert "layers.2.blocks.6.attn.qkv.bias" not in sd          # qkv without bias
    assert not any(k.startswith("layers.3.downsample") for k in sd)
    assert not any(".ls1" in k or ".ls2" in k for k in sd)      # no LayerScale on attention blocks
    blocks = {".".join(k.split(".")[:4]) for k in sd if k.startswith("layers.")}
    assert sum(b.startswith("layers.2.blocks") for b in blocks) == 7 and sum(
        b.startswith("layers.3.blocks") for b in blocks) == 4


@pytest.mark.parametrize("name,r_max,attn", [("efficientmod_xxs", 6, (0, 0, 1, 2)), ("efficientmod_xs", 4, (0, 0, 3, 3)),
                                             ("efficientmod_s", 6, (0, 0, 4, 4)),
                                             ("efficientmod_s_conv", 6, (0, 0, 0, 0))])
def test_block_structure(name, r_max, attn):
    model = _meta(name)
    for i, layer in enumerate(model.layers):
        mods = [b for b in layer.blocks if isinstance(b, BasicBlock)]
        atts = [b for b in layer.blocks if isinstance(b, AttentionBlock)]
        assert len(atts) == attn[i] and len(mods) + len(atts) == len(layer.blocks)
        assert all(isinstance(b, AttentionBlock) for b in list(layer.blocks)[len(mods):])  # after the mod blocks
        assert [b.mlp.expansion for b in mods] == [1 if j % 2 == 0 else r_max for j in range(len(mods))]
        for b in mods:
            assert b.gamma_1 is not None and b.norm.eps == 1e-5
            if b.mlp.expansion == 1:  # r = 1: no activation on the value at all
                assert not b.mlp.expand_dim and not hasattr(b.mlp, "act")
            else:
                assert isinstance(b.mlp.act, nn.GELU) and b.mlp.act.approximate == "none"
    assert all(m.eps == 1e-5 for m in model.modules() if isinstance(m, nn.LayerNorm))


def test_r1_block_math(xxs):
    """r = 1: fc2(fc1(x) * ctx); r = 6: fc2(GELU(fc1(x)) * ctx repeated) — checked against the formula."""
    z = torch.randn(1, 14, 14, 64)
    with torch.no_grad():
        for mlp in (xxs.layers[1].blocks[0].mlp, xxs.layers[1].blocks[1].mlp):
            c = mlp.context_layer
            ctx = c.g(c.act(c.context_list[0](c.f(z).permute(0, 3, 1, 2))).permute(0, 2, 3, 1))
            v = mlp.fc1(z)
            if mlp.expansion > 1:
                v = torch.nn.functional.gelu(v) * torch.cat([ctx] * mlp.expansion, dim=-1)
            else:
                v = v * ctx
            assert torch.allclose(mlp(z), mlp.fc2(v), atol=1e-6, rtol=0)


@pytest.mark.parametrize("name,widths", [("efficientmod_xxs", (768, 768)), ("efficientmod_xs", (768, 864)),
                                         ("efficientmod_s", (768, 936))])
def test_attention_head_widths(name, widths):
    model = _meta(name)
    for stage, width in zip((2, 3), widths):
        atts = [m for m in model.layers[stage].modules() if isinstance(m, Attention)]
        dim = model.layers[stage].blocks[0].norm.normalized_shape[0]
        assert atts and all(a.qkv.out_features == width and a.qkv.bias is None for a in atts)
        assert all(a.head_dim == max(dim // 8, 32) and a.num_heads == 8 for a in atts)
        assert all(a.proj.in_features == width // 3 and a.proj.out_features == dim for a in atts)
    if name == "efficientmod_s":  # att_ratio 5 in the last stage
        assert model.layers[3].blocks[-1].mlp.fc1.out_features == 312 * 5


def test_forward_shape_and_other_sizes(xxs):
    with torch.no_grad():
        assert xxs(torch.randn(2, 3, 224, 224)).shape == (2, 1000)
        m = hvit_deploy.create_model("efficientmod_xxs", input_size=256)
        assert m(torch.randn(1, 3, 256, 256)).shape == (1, 1000)


# ------------------------------------------------------------------------------------------- checkpoints

def _timm_saver_file(sd, ema):
    """What timm's CheckpointSaver (the official train.py) writes, args Namespace and all."""
    return {"epoch": 299, "arch": "efficientMod_xxs", "state_dict": sd, "optimizer": {"state": {}, "param_groups": []},
            "version": 2, "args": argparse.Namespace(model="efficientMod_xxs", lr=4e-3, model_ema=True),
            "state_dict_ema": ema, "metric": 77.1}


@pytest.mark.parametrize("fmt", ["timm_saver", "timm_saver_ema", "model", "bare", "ddp_prefix"])
def test_checkpoint_formats_load_strictly(tmp_path, fmt):
    torch.manual_seed(1)
    src = hvit_deploy.get_spec("efficientmod_xxs").builder()
    sd = src.state_dict()
    ema = {k: v + 1 for k, v in sd.items()}
    obj = {"timm_saver": _timm_saver_file(sd, ema), "timm_saver_ema": _timm_saver_file(sd, ema),
           "model": {"model": sd}, "bare": sd, "ddp_prefix": {"state_dict": {"module." + k: v for k, v in sd.items()}}}[fmt]
    path = tmp_path / "ckpt.pth"
    torch.save(obj, path)
    m = hvit_deploy.create_model("efficientmod_xxs", checkpoint=path, use_ema=(fmt == "timm_saver_ema"))
    want = ema if fmt == "timm_saver_ema" else sd
    got = m.state_dict()
    assert set(got) == set(want) and all(torch.equal(got[k], want[k]) for k in want)


def test_checkpoint_of_other_variant_is_refused(tmp_path):
    path = tmp_path / "xs.pth"
    torch.save({"state_dict": _meta_free_state_dict("efficientmod_xs")}, path)
    with pytest.raises(CheckpointError, match="differ in shape"):
        hvit_deploy.create_model("efficientmod_xxs", checkpoint=path)


def _meta_free_state_dict(name):
    return {k: torch.zeros(v.shape) for k, v in _meta(name).state_dict().items()}


# ---------------------------------------------------------------------------------------------- rewrites

EXACT = ["efficientmod.broadcast_modulation", "efficientmod.expand_modulation", "efficientmod.static_shapes"]


@pytest.mark.parametrize("name", EXACT)
def test_exact_rewrites_are_bit_identical(xxs, name):
    assert get_rewrite(name).exact
    r = assert_rewrite_equal(xxs, "onnx", [name], atol=0, rtol=0)
    assert r.hvit_rewrite_counts[name] == (6 if "modulation" in name else 12)


def test_broadcast_without_static_shapes_and_in_any_batch(xxs):
    r = rewrite(xxs, "onnx", names=["efficientmod.broadcast_modulation"])
    z = torch.randn(3, 3, 160, 160)
    with torch.no_grad():
        assert torch.equal(r(z), xxs(z))


@pytest.mark.parametrize("names,atol", [
    (["efficientmod.fold_layerscale"], 1e-6),
    (["efficientmod.tiled_context"], 1e-6),
    (["explicit_attention"], 1e-6),
    (["efficientmod.nchw"], 2e-6),
    (["efficientmod.broadcast_modulation", "efficientmod.nchw"], 2e-6),
    (["efficientmod.tiled_context", "efficientmod.nchw"], 2e-6),
    (["efficientmod.nchw", "efficientmod.fold_layerscale", "explicit_attention"], 2e-6),
])
def test_rewrites_equal(xxs, names, atol):
    r = assert_rewrite_equal(xxs, "coreml", names, atol=atol, rtol=1e-5)
    # each pass applied on xxs: 12 blocks with LayerScale, 6 modulation MLPs, 3 attentions, 60 Linears made 1x1 convs
    counts = {"efficientmod.fold_layerscale": 12, "efficientmod.tiled_context": 6, "explicit_attention": 3,
              "efficientmod.nchw": 60, "efficientmod.broadcast_modulation": 6}
    assert r.hvit_rewrite_counts == {n: counts[n] for n in names}


def test_rewrite_effects(xxs):
    r = rewrite(xxs, "onnx", names=["efficientmod.fold_layerscale", "efficientmod.tiled_context",
                                     "explicit_attention"])
    assert r.hvit_rewrite_counts == {"efficientmod.fold_layerscale": 12, "efficientmod.tiled_context": 6,
                                     "explicit_attention": 3}
    assert not any(k.endswith("gamma_1") for k in r.state_dict())
    assert tuple(r.layers[0].blocks[1].mlp.context_layer.g.weight.shape) == (192, 32)
    assert not any(getattr(m, "fused_attn", False) for m in r.modules())
    assert any(getattr(m, "fused_attn", False) for m in xxs.modules())  # the original is untouched
    n = rewrite(xxs, "coreml", names=["efficientmod.nchw"])
    assert not any(isinstance(m, nn.Linear) for name, m in n.named_modules() if name.startswith("layers."))


def test_channel_layernorm_difference():
    """The NCHW form's hand-written channel LayerNorm is not bit-identical to nn.LayerNorm; it is ~1e-6 close."""
    from hvit_deploy.rewrites.efficientmod import ChannelLayerNorm

    ln = _trained_looking(nn.Sequential(nn.LayerNorm(256)))[0]
    z = torch.randn(1, 256, 14, 14) * 3 + 1
    with torch.no_grad():
        ref = ln(z.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
    ln.__class__ = ChannelLayerNorm
    with torch.no_grad():
        diff = float((ln(z) - ref).abs().max())
    assert diff < 5e-6


@pytest.mark.parametrize("backend", ["onnx", "openvino", "coreml"])
def test_recipe_equal_per_backend(xxs, backend):
    names = load_recipe("efficientmod").rewrites_for(backend, "efficientmod_xxs")
    assert names[:3] == PREFIX
    r = assert_rewrite_equal(xxs, backend, atol=2e-6, rtol=1e-5)
    assert r.hvit_rewrites == names


@pytest.mark.parametrize("name", list(PARAMS)[1:])
def test_recipe_equal_bigger_variants(name):
    # at 64x64 (stages of 16, 8, 4, 2 tokens a side) to keep the test cheap; the rewrites are size-independent
    torch.manual_seed(0)
    m = _trained_looking(hvit_deploy.create_model(name, input_size=64))
    for backend in ("onnx", "coreml"):
        assert_rewrite_equal(m, backend, inputs=1, atol=2e-6, rtol=1e-5)


# ------------------------------------------------------------------------------------------ conversions

def _onnx(model, x, path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (x,), str(path), opset_version=18, dynamo=False, input_names=["input"])
    import onnx

    return onnx.load(str(path))


def test_onnx_broadcast_has_no_tile_and_runs(xxs, x, tmp_path):
    import onnxruntime as ort

    official = _onnx(xxs, x, tmp_path / "official.onnx")
    assert sum(n.op_type == "Tile" for n in official.graph.node) == 6
    r = rewrite(xxs, "onnx")
    graph = _onnx(r, x, tmp_path / "recipe.onnx")
    ops = [n.op_type for n in graph.graph.node]
    assert "Tile" not in ops and "Shape" not in ops          # broadcast modulation, static shapes
    sess = ort.InferenceSession(str(tmp_path / "recipe.onnx"), providers=["CPUExecutionProvider"])
    y = sess.run(None, {"input": x.numpy()})[0]
    with torch.no_grad():
        ref = xxs(x).numpy()
    assert np.abs(y - ref).max() <= 1e-5


def test_openvino_numeric(xxs, x):
    import openvino as ov

    r = rewrite(xxs, "openvino")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ov_model = ov.convert_model(r, example_input=x)
    assert "Tile" not in {op.get_type_name() for op in ov_model.get_ops()}
    compiled = ov.Core().compile_model(ov_model, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    y = compiled({0: x.numpy()})[compiled.output(0)]
    with torch.no_grad():
        ref = xxs(x).numpy()
    assert np.abs(y - ref).max() <= 1e-5


def test_coreml_converts(xxs, x):
    ct = pytest.importorskip("coremltools")
    r = rewrite(xxs, "coreml")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(r, x)  # the capture that needs static shapes (no aten::Int)
        ml = ct.convert(traced, inputs=[ct.TensorType(name="input", shape=tuple(x.shape))], convert_to="mlprogram",
                        minimum_deployment_target=ct.target.iOS16, compute_precision=ct.precision.FLOAT32)
    ops = [op.op_type for f in ml._mil_program.functions.values() for op in f.operations]
    assert "transpose" not in ops and "tile" not in ops      # NCHW throughout, broadcast modulation
    assert ops.count("layer_norm") == 23                     # the channel LayerNorms fused back by coremltools
    assert ops.count("conv") == 76 and ops.count("linear") == 1


# --------------------------------------------------------------------------------- through the exporter

@pytest.fixture(scope="module")
def export_session():
    from hvit_deploy.export import ExportSession

    return ExportSession("efficientmod_xxs")


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["onnx", "openvino", "coreml"])
def test_exporter_round_trip(export_session, tmp_path_factory, fmt):
    r = export_session.export(fmt, tmp_path_factory.mktemp(fmt))
    assert r.ok, r.error
    assert r.rewrites == load_recipe("efficientmod").rewrites_for(fmt)
    ops = r.entry["op_types"]
    if fmt == "coreml":
        assert "transpose" not in ops and "tile" not in ops and ops["layer_norm"] == 23
        return
    v = r.validation
    assert v["max_abs"] < 1e-5 and v["min_cosine"] > 0.99999 and v["top1"] == 1.0 and v["inputs"] == 4
    assert "Tile" not in ops
