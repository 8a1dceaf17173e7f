"""SMT: official parameter counts and key layout, the SAM/MSA layout, checkpoint loading, every rewrite equal on
weights with non-trivial BN statistics, and smt_t through ONNX Runtime, OpenVINO and Core ML."""
from __future__ import annotations

import functools

import onnx
import pytest
import timm
import torch
import torch.nn as nn
import torch.nn.functional as F

from hvit_deploy import create_model, get_spec
from hvit_deploy.errors import HvitError, RewriteError
from hvit_deploy.models import smt as S
from hvit_deploy.recipes import load_recipe
from hvit_deploy.rewriting import rewrite
from hvit_deploy.testing import assert_rewrite_equal, randomize_norm_stats, save_training_checkpoint, max_tensor_rank

PARAMS = {"smt_t": 11_506_536, "smt_s": 22_550_952, "smt_b": 32_037_352, "smt_l": 80_620_264}
ALL = ["smt.static_shapes", "smt.drop_modulator", "smt.fold_bn", "smt.fold_layerscale", "smt.merge_mhmc",
       "smt.fold_interleave", "smt.msa_slices"]


@functools.lru_cache(maxsize=None)
def _meta(name):
    """The variant built on the meta device: shapes and structure without memory or init cost."""
    with torch.device("meta"):
        return get_spec(name).builder()


@pytest.fixture(scope="module")
def smt_t():
    torch.manual_seed(0)
    return randomize_norm_stats(create_model("smt_t"))


@pytest.fixture(scope="module")
def smt_t_ls():
    """smt_t built with layerscale, the gammas set away from 1e-4 so that folding them is visible."""
    torch.manual_seed(1)
    return randomize_norm_stats(create_model("smt_t", use_layerscale=True))


# ------------------------------------------------------------------------------------------ the faithful model

@pytest.mark.parametrize("name", sorted(PARAMS))
def test_parameter_counts_match_official(name):
    m = _meta(name)
    assert sum(p.numel() for p in m.parameters()) == PARAMS[name] == get_spec(name).params


def test_variant_configs():
    ls = {n: any(k.endswith("gamma_1") for k in _meta(n).state_dict()) for n in PARAMS}
    assert ls == {"smt_t": False, "smt_s": False, "smt_b": False, "smt_l": True}  # SMT-L's configs set layerscale
    l_sd = _meta("smt_l").state_dict()
    assert l_sd["patch_embed1.conv.0.weight"].shape == (96, 3, 7, 7)  # head_conv 7 for B and L
    assert _meta("smt_b").patch_embed1.conv[0].padding == (3, 3)
    assert _meta("smt_s").patch_embed1.conv[0].padding == (1, 1)
    assert l_sd["block4.0.attn.q.weight"].shape == (768, 768) and _meta("smt_l").block4[0].attn.scale == 48 ** -0.5


def test_official_key_layout_smt_t():
    sd = _meta("smt_t").state_dict()
    assert len(sd) == 386
    shapes = {k: tuple(v.shape) for k, v in sd.items()}
    expected = {
        "patch_embed1.conv.0.weight": (64, 3, 3, 3),
        "patch_embed1.conv.1.running_var": (64,),
        "patch_embed1.conv.1.num_batches_tracked": (),
        "patch_embed1.conv.3.weight": (64, 64, 2, 2),
        "patch_embed1.conv.3.bias": (64,),
        "patch_embed1.norm.weight": (64,),
        "patch_embed2.proj.weight": (128, 64, 3, 3),
        "patch_embed4.norm.bias": (512,),
        "block1.0.attn.v.weight": (64, 64),
        "block1.0.attn.s.bias": (64,),
        "block1.0.attn.local_conv_1.weight": (16, 1, 3, 3),
        "block1.0.attn.local_conv_4.weight": (16, 1, 9, 9),
        "block1.0.attn.local_conv_4.bias": (16,),
        "block1.0.attn.proj0.weight": (128, 4, 1, 1),
        "block1.0.attn.bn.running_mean": (128,),
        "block1.0.attn.proj1.weight": (64, 128, 1, 1),
        "block1.0.mlp.fc1.weight": (256, 64),
        "block1.0.mlp.dwconv.dwconv.weight": (256, 1, 3, 3),
        "block1.0.mlp.fc2.weight": (64, 256),
        "block3.1.attn.q.weight": (256, 256),
        "block3.1.attn.kv.weight": (512, 256),
        "block3.1.attn.local_conv.weight": (256, 1, 3, 3),
        "block4.0.attn.kv.bias": (1024,),
        "block4.0.mlp.fc1.weight": (1024, 512),
        "norm4.weight": (512,),
        "head.weight": (1000, 512),
    }
    assert {k: shapes.get(k) for k in expected} == expected
    assert not any("gamma" in k or "modulator" in k for k in sd)
    assert sum(k.endswith("num_batches_tracked") for k in sd) == 1 + 8  # stem BN + one BN per SAM block


def test_layout_and_norms():
    m = _meta("smt_s")
    kinds = [["SAM" if b.attn.ca_attention == 1 else "MSA" for b in getattr(m, f"block{i}")] for i in (1, 2, 3, 4)]
    assert kinds[0] == ["SAM"] * 3 and kinds[1] == ["SAM"] * 4 and kinds[3] == ["MSA"] * 2
    assert kinds[2] == ["SAM", "MSA"] * 9  # stage 3: `i == 2 and j % 2 != 0` is MSA
    eps = {n: mod.eps for n, mod in m.named_modules() if isinstance(mod, nn.LayerNorm)}
    assert all(v == 1e-5 for k, v in eps.items() if k.startswith("patch_embed"))
    assert all(v == 1e-6 for k, v in eps.items() if not k.startswith("patch_embed"))
    assert len(eps) == 4 + 4 + 2 * sum(m.depths)
    assert all(isinstance(mod.act, nn.GELU) and mod.act.approximate == "none"
               for mod in m.modules() if isinstance(mod, S.Mlp))


def _sam_reference(a: S.Attention, x: torch.Tensor, H: int, W: int) -> torch.Tensor:
    """The SAM maths written out: head i (kernel 3+2i) of ``s`` lands on channels j*h + i."""
    B, N, C = x.shape
    h, c = a.ca_num_heads, C // a.ca_num_heads
    s = F.linear(x, a.s.weight, a.s.bias).transpose(1, 2).reshape(B, C, H, W)
    mixed = torch.empty_like(s)
    for i in range(h):
        conv = getattr(a, f"local_conv_{i + 1}")
        out = F.conv2d(s[:, i * c:(i + 1) * c], conv.weight, conv.bias, padding=1 + i, groups=c)
        mixed[:, i::h] = out
    y = F.conv2d(mixed, a.proj0.weight, a.proj0.bias, groups=c)
    y = F.batch_norm(y, a.bn.running_mean, a.bn.running_var, a.bn.weight, a.bn.bias, False, 0.0, a.bn.eps)
    y = F.conv2d(F.gelu(y), a.proj1.weight, a.proj1.bias)
    out = y.reshape(B, C, N).transpose(1, 2) * F.linear(x, a.v.weight, a.v.bias)
    return F.linear(out, a.proj.weight, a.proj.bias)


def _msa_reference(a: S.Attention, x: torch.Tensor, H: int, W: int) -> torch.Tensor:
    B, N, C = x.shape
    h = a.sa_num_heads
    q = F.linear(x, a.q.weight, a.q.bias).reshape(B, N, h, -1).transpose(1, 2)
    k, v = F.linear(x, a.kv.weight, a.kv.bias).chunk(2, dim=-1)
    k, vh = (t.reshape(B, N, h, -1).transpose(1, 2) for t in (k, v))
    attn = ((q @ k.transpose(-2, -1)) * (C // h) ** -0.5).softmax(-1)
    local = F.conv2d(v.transpose(1, 2).reshape(B, C, H, W), a.local_conv.weight, a.local_conv.bias, padding=1,
                     groups=C)
    out = (attn @ vh).transpose(1, 2).reshape(B, N, C) + local.flatten(2).transpose(1, 2)
    return F.linear(out, a.proj.weight, a.proj.bias)


def test_attention_maths_match_the_written_out_reference(smt_t):
    torch.manual_seed(2)
    with torch.no_grad():
        for blk, H in ((smt_t.block1[0], 56), (smt_t.block3[1], 14)):
            x = torch.randn(2, H * H, blk.attn.dim)
            ref = (_sam_reference if blk.attn.ca_attention == 1 else _msa_reference)(blk.attn, x, H, H)
            assert torch.allclose(blk.attn(x, H, H), ref, atol=1e-5, rtol=1e-4)


def test_forward_sizes_and_timm(smt_t):
    with torch.no_grad():
        assert smt_t(torch.randn(2, 3, 224, 224)).shape == (2, 1000)
        assert smt_t(torch.randn(1, 3, 256, 256)).shape == (1, 1000)  # any multiple of 32
    assert smt_t.block1[0].attn.modulator.shape == (1, 64, 64, 64)  # the official side store is kept
    m = timm.create_model("smt_t", num_classes=10)
    assert isinstance(m, S.SMT) and m.head.out_features == 10
    spec = get_spec("smt_large")
    assert spec.name == "smt_l" and get_spec("smt_tiny").name == "smt_t" and get_spec("SMT-T".lower()).name == "smt_t"
    from hvit_deploy.factory import resolve_input_size

    assert resolve_input_size(spec, 384) == (3, 384, 384) and resolve_input_size(get_spec("smt_t"), 288)[1] == 288
    with pytest.raises(HvitError, match="multiple of 32"):
        resolve_input_size(spec, 250)


# ----------------------------------------------------------------------------------------------- checkpoints

def test_official_training_file_loads_strictly(tmp_path, smt_t_ls):
    """SMT's training script saves {'model', 'optimizer', ..., 'config': yacs CfgNode}; the safe loader reads it."""
    sd = smt_t_ls.state_dict()
    path = save_training_checkpoint(tmp_path / "smt_tiny.pth", sd, container="model", with_yacs_config=True,
                                    extra={"optimizer": {"state": {}, "param_groups": [{"lr": 1e-3}]},
                                           "lr_scheduler": {"last_epoch": 300}})
    loaded = create_model("smt_t", checkpoint=path, use_layerscale=True)
    got = loaded.state_dict()
    assert got.keys() == sd.keys() and all(torch.equal(got[k], sd[k]) for k in sd)
    with pytest.raises(HvitError, match="unexpected key"):  # without layerscale the gammas have no place
        create_model("smt_t", checkpoint=path)


def test_detection_copy_keys_are_renamed(tmp_path, smt_t):
    sd = {("backbone." + k).replace("attn.local_conv.", "attn.dw_conv."): v for k, v in smt_t.state_dict().items()
          if not k.startswith("head.")}
    assert any(".attn.dw_conv." in k for k in sd)
    remapped = S.remap_official_keys(sd)
    assert set(remapped) == {k for k in smt_t.state_dict() if not k.startswith("head.")}
    path = save_training_checkpoint(tmp_path / "det.pth", sd, container="state_dict")
    loaded = create_model("smt_t", checkpoint=path, strict=False)
    assert torch.equal(loaded.block3[1].attn.local_conv.weight, smt_t.block3[1].attn.local_conv.weight)


# -------------------------------------------------------------------------------------------------- rewrites

# how often each pass applies on smt_t (depths 2, 2, 8, 1): 8 SAM blocks (stages 1-2 and the first half of stage
# 3), 5 MSA blocks, 13 blocks in all, 9 BatchNorms, 31 modules whose shapes are fixed
COUNTS = {"smt.static_shapes": 31, "smt.drop_modulator": 8, "smt.fold_bn": 9, "smt.fold_layerscale": 13,
          "smt.mhmc_split": 8, "smt.merge_mhmc": 8, "smt.fold_interleave": 8, "smt.msa_slices": 5,
          "smt.dense_proj0": 8}


@pytest.mark.parametrize("names", [
    ["smt.static_shapes"], ["smt.drop_modulator"], ["smt.fold_bn"], ["smt.fold_layerscale"], ["smt.mhmc_split"],
    ["smt.merge_mhmc"], ["smt.merge_mhmc", "smt.fold_interleave"], ["smt.msa_slices"],
    ["smt.mhmc_split", "smt.dense_proj0"], ["smt.merge_mhmc", "smt.dense_proj0"], ALL,
])
def test_each_rewrite_is_equal(smt_t, smt_t_ls, names):
    # fold_layerscale needs a variant with LayerScale (on smt_t it would compare the model with itself)
    model = smt_t_ls if "smt.fold_layerscale" in names else smt_t
    r = assert_rewrite_equal(model, "onnx", names, atol=2e-6, rtol=1e-5)
    assert r.hvit_rewrite_counts == {n: COUNTS[n] for n in names}  # each pass applied, as often as it should
    if "smt.fold_layerscale" in names:
        assert sum("gamma" in k for k in model.state_dict()) == 26  # 13 blocks x (gamma_1, gamma_2) ...
        assert not any("gamma" in k for k in r.state_dict())         # ... all folded
    if "smt.fold_bn" in names:
        assert not any(isinstance(m, nn.BatchNorm2d) for m in r.modules())
    if "smt.dense_proj0" in names:  # proj0 becomes dense: no grouped 1x1 left in the SAM blocks
        assert r.block1[0].attn.proj0.groups == 1 != smt_t.block1[0].attn.proj0.groups


@pytest.mark.parametrize("backend", ["onnx", "openvino", "coreml"])
def test_recipe_is_equal_per_backend(smt_t, smt_t_ls, backend):
    for m in (smt_t, smt_t_ls):
        r = assert_rewrite_equal(m, backend, atol=2e-6, rtol=1e-5)
        assert r.hvit_rewrites == load_recipe("smt").rewrites_for(backend) and r.hvit_rewrites


def test_exact_rewrites_are_bit_exact(smt_t):
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        ref = smt_t(x)
        for names in (["smt.static_shapes"], ["smt.drop_modulator"], ["smt.mhmc_split"], ["smt.msa_slices"]):
            assert torch.equal(rewrite(smt_t, "onnx", names=names)(x), ref), names


def test_layerscale_fold(smt_t_ls):
    r = rewrite(smt_t_ls, "onnx", names=["smt.fold_layerscale"])
    assert not any("gamma" in k for k in r.state_dict())
    assert all(b.gamma_1 == 1.0 and b.gamma_2 == 1.0 for b in r.modules() if isinstance(b, S.Block))
    g = smt_t_ls.block2[1].gamma_2.detach()
    assert torch.allclose(r.block2[1].mlp.fc2.weight, smt_t_ls.block2[1].mlp.fc2.weight * g[:, None])
    assert r.hvit_rewrite_counts["smt.fold_layerscale"] == 13


def test_rewritten_structure(smt_t):
    r = rewrite(smt_t, "coreml")
    counts = r.hvit_rewrite_counts
    assert counts["smt.merge_mhmc"] == counts["smt.fold_interleave"] == counts["smt.drop_modulator"] == 8
    assert counts["smt.fold_bn"] == 9 and counts["smt.msa_slices"] == 5
    assert not any(isinstance(m, nn.BatchNorm2d) for m in r.modules())
    sam = r.block1[0].attn
    assert not hasattr(sam, "local_conv_1") and sam.mhmc.kernel_size == (9, 9) and sam.mhmc.groups == 64
    with torch.no_grad():
        r(torch.randn(1, 3, 224, 224))
    assert not any("modulator" in vars(m) for m in r.modules())
    graph = torch.jit.trace(r, torch.randn(1, 3, 224, 224), check_trace=False).inlined_graph
    kinds = [n.kind() for n in graph.nodes()]
    assert not {"aten::size", "aten::Int", "prim::NumToTensor"} & set(kinds)
    # per SAM block one MHMC conv + proj0 + proj1; MLP dw convs; MSA dw convs; stem (2); patch embeds 2-4
    assert kinds.count("aten::_convolution") == 8 * 3 + 13 + 5 + 2 + 3
    assert max_tensor_rank(r, (1, 3, 224, 224)) <= 4  # the interleave is folded away: nothing above rank 4
    assert max_tensor_rank(smt_t, (1, 3, 224, 224)) == 5
    with pytest.raises(RewriteError, match="fold_interleave needs"):
        rewrite(smt_t, "onnx", names=["smt.fold_interleave"])


def test_merged_kernels_are_centred(smt_t):
    r = rewrite(smt_t, "onnx", names=["smt.merge_mhmc"])
    a, w = smt_t.block2[0].attn, r.block2[0].attn.mhmc.weight
    c = a.dim // 4
    assert torch.equal(w[:c, :, 3:6, 3:6], a.local_conv_1.weight)
    outside = w[:c].clone()
    outside[:, :, 3:6, 3:6] = 0
    assert not outside.any()  # zero taps around the centred 3x3
    assert torch.equal(w[2 * c:3 * c, :, 1:8, 1:8], a.local_conv_3.weight)
    assert torch.equal(w[3 * c:], a.local_conv_4.weight)


# ----------------------------------------------------------------------------------------------- conversions

@pytest.fixture(scope="module")
def session():
    from hvit_deploy.export import ExportSession

    return ExportSession("smt_t")


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["onnx", "openvino", "coreml"])
def test_smt_t_round_trip(session, tmp_path_factory, fmt):
    out = tmp_path_factory.mktemp("smt")
    r = session.export(fmt, out)
    assert r.ok, r.error
    assert r.rewrites == load_recipe("smt").rewrites_for(fmt)
    if fmt in ("onnx", "openvino"):
        v = r.validation
        assert v["max_abs"] < 1e-5 and v["min_cosine"] > 0.99999 and v["top1"] == 1.0
    if fmt == "onnx":
        ops = {n.op_type for n in onnx.load(str(r.path)).graph.node}
        assert not ops & {"Shape", "Gather", "BatchNormalization", "Concat"}
    if fmt == "coreml":
        from hvit_deploy.formats.coreml import inspect_package

        facts = inspect_package(r.path)
        assert facts["max_rank"] <= 5 and facts["outputs"][0]["shape"] == [1, 1000]
        assert "batch_norm" not in facts["op_types"] and "concat" not in facts["op_types"]
