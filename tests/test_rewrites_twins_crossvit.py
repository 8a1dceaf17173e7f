"""Twins and CrossViT rewrites: equal outputs, same weights, static shapes, rank <= 5, no bicubic resize."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import hvit_deploy
from hvit_deploy import create_model
from hvit_deploy.rewrites.crossvit import bicubic_matrix
from hvit_deploy.testing import assert_rewrite_equal, max_tensor_rank


@pytest.fixture(scope="module")
def svt():
    torch.manual_seed(0)
    return create_model("twins_svt_s")


@pytest.fixture(scope="module")
def pcpvt():
    torch.manual_seed(0)
    return create_model("twins_pcpvt_s")


@pytest.fixture(scope="module")
def crossvit():
    torch.manual_seed(0)
    return create_model("crossvit_9_dagger")


def _traced_size_reads(model, shape) -> int:
    graph = torch.jit.trace(model, torch.randn(shape), check_trace=False).inlined_graph
    return sum(1 for n in graph.nodes() if n.kind() in ("aten::size", "aten::Int", "prim::NumToTensor"))


# twins_svt_s (depths 2, 2, 10, 4): 18 attention modules made explicit; static shapes for the 9 GSA, 4 patch embeds,
# 4 position convs and the model (the 9 LSA, every even block, take the rank-5 form instead)
TWINS_COUNTS = {"explicit_attention": 18, "twins.static_shapes": 18, "twins.lsa_rank5": 9}


@pytest.mark.parametrize("names", [["twins.static_shapes"], ["twins.lsa_rank5"], ["explicit_attention"], None])
def test_twins_svt_rewrites_equal(svt, names):
    for backend in ("onnx", "coreml"):
        r = assert_rewrite_equal(svt, backend, names, atol=1e-6, rtol=1e-5)
        assert r.hvit_rewrite_counts == {n: TWINS_COUNTS[n] for n in names or TWINS_COUNTS}  # each pass applied
        if "explicit_attention" in r.hvit_rewrites:  # the fused SDPA path is switched off in every attention
            assert any(getattr(m, "fused_attn", False) for m in svt.modules())
            assert not any(getattr(m, "fused_attn", False) for m in r.modules())


def test_twins_static_forms_are_bit_exact(pcpvt):
    r = hvit_deploy.rewrite(pcpvt, "onnx", names=["twins.static_shapes"])
    assert r.hvit_rewrite_counts == {"twins.static_shapes": 25}  # 16 GSA + 4 patch embeds + 4 position convs + the model
    assert _traced_size_reads(pcpvt, (1, 3, 224, 224)) > 0 and _traced_size_reads(r, (1, 3, 224, 224)) == 0
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        assert torch.equal(pcpvt(x), r(x))


def test_twins_rewrite_keeps_weights_and_original(svt):
    before = {k: v.clone() for k, v in svt.state_dict().items()}
    r = hvit_deploy.rewrite(svt, "coreml")
    assert r is not svt and r.hvit_rewrites == ["explicit_attention", "twins.static_shapes", "twins.lsa_rank5"]
    assert r.hvit_rewrite_counts["twins.lsa_rank5"] == 9  # one LSA per even block: 1+1+5+2
    after = r.state_dict()
    assert after.keys() == before.keys() and all(torch.equal(after[k], before[k]) for k in before)
    assert all(torch.equal(svt.state_dict()[k], before[k]) for k in before)
    assert type(svt.blocks[0][0].attn).__name__ == "LocallyGroupedAttn"  # the original is untouched


def test_twins_svt_rank_at_most_5(svt):
    assert max_tensor_rank(svt, (1, 3, 224, 224)) == 6  # the official form needs rank 6 ...
    assert max_tensor_rank(hvit_deploy.rewrite(svt, "coreml"), (1, 3, 224, 224)) <= 5  # ... the rewrite does not


def test_twins_static_shapes_leave_no_size_reads(svt):
    assert _traced_size_reads(svt, (1, 3, 224, 224)) > 0
    assert _traced_size_reads(hvit_deploy.rewrite(svt, "coreml"), (1, 3, 224, 224)) == 0


def test_twins_lsa_pads_when_grid_is_not_a_multiple_of_the_window():
    m = create_model("twins_svt_s", input_size=256)  # 64x64 tokens: windows of 7 need padding, as timm does
    assert_rewrite_equal(m, "onnx", ["twins.lsa_rank5"], inputs=1, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("src,dst", [(240, 224), (224, 240), (408, 384)])
def test_bicubic_matrix_equals_interpolate(src, dst):
    x = torch.randn(1, 3, src, src)
    a = bicubic_matrix(src, dst)
    y = a @ x @ a.t()
    ref = F.interpolate(x, size=(dst, dst), mode="bicubic", align_corners=False)
    assert (y - ref).abs().max() < 2e-6  # float summation order only (7e-7 measured)


@pytest.mark.parametrize("names", [["crossvit.static_shapes"], ["crossvit.bicubic_as_matmul"], ["out_of_place"], None])
def test_crossvit_rewrites_equal(crossvit, names):
    r = assert_rewrite_equal(crossvit, "coreml", names, atol=1e-6, rtol=1e-5)
    counts = {"explicit_attention": 12, "out_of_place": 4, "crossvit.static_shapes": 21,
              "crossvit.bicubic_as_matmul": 1}
    assert r.hvit_rewrite_counts == {n: counts[n] for n in names or counts}  # each pass applied


def test_crossvit_static_shapes_bit_exact_and_no_size_reads(crossvit):
    r = hvit_deploy.rewrite(crossvit, "onnx", names=["crossvit.static_shapes"])
    x = torch.randn(1, 3, 240, 240)
    with torch.no_grad():
        assert torch.equal(crossvit(x), r(x))
    full = hvit_deploy.rewrite(crossvit, "coreml")
    assert _traced_size_reads(full, (1, 3, 240, 240)) == 0


def test_crossvit_graph_has_no_bicubic_resize(crossvit):
    def ops(model):
        graph = torch.jit.trace(model, torch.randn(1, 3, 240, 240), check_trace=False).inlined_graph
        return {n.kind() for n in graph.nodes()}

    assert "aten::upsample_bicubic2d" in ops(crossvit)
    assert "aten::upsample_bicubic2d" not in ops(hvit_deploy.rewrite(crossvit, "coreml"))


def test_crossvit_dagger_stem_relu_out_of_place(crossvit):
    r = hvit_deploy.rewrite(crossvit, "coreml")
    relus = [m for m in r.modules() if isinstance(m, torch.nn.ReLU)]
    assert relus and not any(m.inplace for m in relus)
    assert any(m.inplace for m in crossvit.modules() if isinstance(m, torch.nn.ReLU))


def test_crossvit_408_rewrite_equal():
    m = create_model("crossvit_15_dagger_408")
    assert_rewrite_equal(m, "coreml", ["crossvit.static_shapes", "crossvit.bicubic_as_matmul"], inputs=1,
                         atol=1e-6, rtol=1e-5)


def test_unknown_format_and_rewrite_names():
    m = create_model("crossvit_ti")
    with pytest.raises(hvit_deploy.HvitError) as e:
        hvit_deploy.rewrite(m, "tflite")
    assert str(e.value) == ("unknown format 'tflite': rewrites are for an export format, one of onnx, openvino, "
                            "coreml")
    with pytest.raises(TypeError):
        hvit_deploy.rewrite(m, backend="onnx")  # the old keyword is gone: formats are not backends
    with pytest.raises(hvit_deploy.HvitError) as e:
        hvit_deploy.rewrite(m, "onnx", names=["nope"])
    assert str(e.value) == "unknown rewrite 'nope'; run `hvit-export --list-rewrites` to see them"
    with pytest.raises(hvit_deploy.HvitError) as e:
        hvit_deploy.rewrite(m, "onnx", names=["crossvit.static_shape"])
    assert str(e.value).startswith("unknown rewrite 'crossvit.static_shape'; did you mean crossvit.static_shapes")
    assert "\n" not in str(e.value)
