"""Checkpoint loading: official container formats, prefixes, renames, safe unpickling, clear errors.

The format tests run on the smallest model (EfficientMod-xxs); the Twins-specific shape checks keep Twins. The
Swin-style training files carry a REAL ``yacs.config.CfgNode`` (yacs is in the dev extra), whose ``__dict__``
holds a set and dicts, as the official SMT and Swin-ACmix releases do."""
from __future__ import annotations

import argparse
import os
import pickle

import numpy as np
import pytest
import torch
import yacs.config  # noqa: F401  (imported first, so save_training_checkpoint pickles the real CfgNode)
from yacs.config import CfgNode

from hvit_deploy import create_model
from hvit_deploy.checkpoint import read_checkpoint
from hvit_deploy.errors import CheckpointError
from hvit_deploy.testing import save_training_checkpoint


SMALL = "efficientmod_xxs"


def _perturbed(name: str):
    torch.manual_seed(1)
    m = create_model(name)
    with torch.no_grad():
        for p in m.parameters():
            p.add_(torch.randn_like(p) * 0.01)
    return m


@pytest.fixture(scope="module")
def reference():
    """The smallest model with non-default weights, as a stand-in for an official release."""
    return _perturbed(SMALL)


@pytest.fixture(scope="module")
def twins_reference():
    """A Twins-PCPVT-S with non-default weights, for the checks that name Twins' own shapes."""
    return _perturbed("twins_pcpvt_s")


def _same_weights(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


@pytest.mark.parametrize("container,prefix,yacs,args", [
    (None, "", False, False),               # bare state dict (CrossViT releases)
    ("model", "", True, False),             # Swin-style training file with a yacs config (SMT, Swin-ACmix)
    ("model", "", False, True),             # DeiT-style training file with argparse args (Twins, CrossViT)
    ("state_dict", "module.", False, False),  # DDP-wrapped (ResNet-ACmix, timm-style)
    ("state_dict_ema", "", False, True),    # timm --model-ema file (EfficientMod)
])
def test_official_formats_load_strictly(tmp_path, reference, container, prefix, yacs, args):
    path = save_training_checkpoint(tmp_path / "w.pth", reference.state_dict(), container=container, prefix=prefix,
                                    with_yacs_config=yacs, with_args=args)
    loaded = create_model(SMALL, checkpoint=path)
    assert _same_weights(reference, loaded)
    assert not loaded.training
    if yacs:  # the helper pickled the real class, not a stand-in
        assert type(torch.load(path, weights_only=False)["config"]) is CfgNode


def _swin_style_config() -> CfgNode:
    """A config as Swin's / SMT's / Swin-ACmix's ``config.py`` builds it: nested nodes, lists, tuples, a
    registered deprecated key (a set in ``__dict__``) and a renamed key (a dict in ``__dict__``), frozen."""
    c = CfgNode()
    c.MODEL = CfgNode()
    c.MODEL.TYPE, c.MODEL.NAME, c.MODEL.DROP_PATH_RATE = "smt", "smt_tiny_224", 0.2
    c.MODEL.SMT = CfgNode()
    c.MODEL.SMT.EMBED_DIMS, c.MODEL.SMT.CA_NUM_HEADS = [64, 128, 256, 512], [4, 4, 4, -1]
    c.DATA = CfgNode()
    c.DATA.IMG_SIZE, c.DATA.MEAN = 224, (0.485, 0.456, 0.406)
    c.TRAIN = CfgNode()
    c.TRAIN.BASE_LR, c.TRAIN.EPOCHS, c.TRAIN.USE_CHECKPOINT = 5e-4, 300, False
    c.register_deprecated_key("MODEL.OLD_KEY")
    c.register_renamed_key("TRAIN.LR", "TRAIN.BASE_LR")
    c.freeze()
    assert c.__dict__["__deprecated_keys__"] == {"MODEL.OLD_KEY"} and c.__dict__["__renamed_keys__"]
    return c


@pytest.mark.parametrize("container", ["model", "state_dict_ema"])
def test_real_yacs_training_file_loads_with_weights_only(tmp_path, reference, container):
    """Swin's ``save_checkpoint``: model, optimizer, lr_scheduler, max_accuracy, epoch, config (a real yacs
    CfgNode) and amp's scaler; read with weights_only (no --trust-checkpoint), config kept as plain dicts."""
    sd = reference.state_dict()
    opt = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(2))], lr=1e-3)
    path = tmp_path / "ckpt_epoch_299.pth"
    torch.save({container: sd, "optimizer": opt.state_dict(), "lr_scheduler": {"last_epoch": 299},
                "max_accuracy": 82.3, "epoch": 299, "config": _swin_style_config(),
                "scaler": {"scale": 65536.0, "_growth_tracker": 10}}, path)
    raw = read_checkpoint(path)  # weights_only=True
    cfg = raw["config"]
    assert not isinstance(cfg, CfgNode)  # no yacs code ran: a plain mapping came back
    assert cfg["MODEL"]["NAME"] == "smt_tiny_224" and cfg["MODEL"]["SMT"]["EMBED_DIMS"] == [64, 128, 256, 512]
    assert cfg["DATA"]["MEAN"] == (0.485, 0.456, 0.406) and cfg["TRAIN"]["EPOCHS"] == 300
    assert raw["max_accuracy"] == 82.3 and raw["epoch"] == 299
    loaded = create_model(SMALL, checkpoint=path)
    assert _same_weights(reference, loaded)


def test_ema_weights_preferred_on_request(tmp_path, reference):
    plain = create_model(SMALL).state_dict()
    path = tmp_path / "both.pth"
    torch.save({"state_dict": plain, "state_dict_ema": reference.state_dict()}, path)
    assert _same_weights(reference, create_model(SMALL, checkpoint=path, use_ema=True))
    assert not _same_weights(reference, create_model(SMALL, checkpoint=path))


def test_crossvit_official_keys_are_renamed(tmp_path):
    m = create_model("crossvit_ti")
    official = {k.replace("pos_embed_", "pos_embed.").replace("cls_token_", "cls_token."): v
                for k, v in m.state_dict().items()}
    assert "pos_embed.0" in official and "cls_token.1" in official
    path = tmp_path / "crossvit_tiny_224.pth"
    torch.save(official, path)
    loaded = create_model("crossvit_ti", checkpoint=path)
    assert torch.equal(loaded.pos_embed_0, m.pos_embed_0)


def test_wrong_variant_is_refused_with_shapes(tmp_path, twins_reference):
    path = tmp_path / "w.pth"
    torch.save(twins_reference.state_dict(), path)
    with pytest.raises(CheckpointError, match=r"tensors differ in shape, e.g. .*\(320, 128, 2, 2\) vs model \(256, 128, 2, 2\)"):
        create_model("twins_svt_s", checkpoint=path)  # PCPVT-S stage 3 is 320 wide, SVT-S 256
    with pytest.raises(CheckpointError, match=r"216 missing key\(s\) \(blocks\.2\.6\."):
        create_model("twins_pcpvt_b", checkpoint=path)  # same widths, more blocks


def test_missing_and_unexpected_keys_are_named(tmp_path, reference):
    sd = dict(reference.state_dict())
    sd.pop("head.weight")
    sd["extra.weight"] = torch.zeros(1)
    path = tmp_path / "w.pth"
    torch.save(sd, path)
    with pytest.raises(CheckpointError) as e:
        create_model(SMALL, checkpoint=path)
    msg = str(e.value)
    assert "1 missing key(s) (head.weight)" in msg and "1 unexpected key(s) (extra.weight)" in msg
    loaded = create_model(SMALL, checkpoint=path, strict=False)
    assert torch.equal(loaded.head.bias, reference.head.bias)


def test_missing_file(tmp_path):
    with pytest.raises(CheckpointError, match="checkpoint not found"):
        create_model(SMALL, checkpoint=tmp_path / "nope.pth")


@pytest.mark.parametrize("seed", range(40))
def test_corrupt_file(tmp_path, seed):
    """Random bytes (some start like a pickle) must always give a CheckpointError, whatever the unpickler hits."""
    import random

    rng = random.Random(seed)
    path = tmp_path / "corrupt.pth"
    head = b"\x80\x02" if seed % 2 else b""
    path.write_bytes(head + bytes(rng.getrandbits(8) for _ in range(4096)))
    with pytest.raises(CheckpointError, match="corrupt|cannot read|refusing"):
        read_checkpoint(path)


def test_truncated_file(tmp_path, reference):
    path = tmp_path / "w.pth"
    torch.save(reference.state_dict(), path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 3])
    with pytest.raises(CheckpointError):
        create_model(SMALL, checkpoint=path)


class Payload:
    """An object whose unpickling would run code; the safe loader must refuse it."""

    def __reduce__(self):
        return (os.system, ("echo pwned > /dev/null",))


def test_arbitrary_pickle_refused_by_default(tmp_path, reference):
    path = tmp_path / "evil.pth"
    torch.save({"model": reference.state_dict(), "hook": Payload()}, path)
    with pytest.raises(CheckpointError) as e:
        read_checkpoint(path)
    assert "posix.system" in str(e.value) or "os.system" in str(e.value)
    assert "--trust-checkpoint" in str(e.value)


def test_trusted_pickle_loads_with_opt_in(tmp_path, reference):
    path = tmp_path / "custom.pth"
    torch.save({"model": reference.state_dict(), "meta": {"note": pickle.dumps(1)}}, path)
    loaded = create_model(SMALL, checkpoint=path, trust_checkpoint=True)
    assert _same_weights(reference, loaded)


def test_not_a_state_dict(tmp_path):
    path = tmp_path / "list.pth"
    torch.save([1, 2, 3], path)
    with pytest.raises(CheckpointError, match="not a state dict"):
        create_model(SMALL, checkpoint=path)


def test_safetensors(tmp_path, reference):
    from safetensors.torch import save_file

    path = tmp_path / "w.safetensors"
    save_file({k: v.contiguous() for k, v in reference.state_dict().items()}, str(path))
    assert _same_weights(reference, create_model(SMALL, checkpoint=path))


# ------------------------------------------------------------------- the loader's parts, on a two-layer model
# (fast; each pins a message, an order or a boundary that a wrong constant or comparison would move)

def _tiny() -> torch.nn.Module:
    torch.manual_seed(3)
    return torch.nn.Sequential(torch.nn.Linear(2, 3), torch.nn.BatchNorm1d(3))


def test_extract_state_dict_unwraps_nested_containers_and_prefixes():
    from hvit_deploy.checkpoint import extract_state_dict

    sd = _tiny().state_dict()
    assert extract_state_dict(_tiny()).keys() == sd.keys()                  # a module gives its own state dict
    nested = {"model": {"state_dict": {f"module.model.{k}": v for k, v in sd.items()}}, "epoch": 3}
    assert extract_state_dict(nested).keys() == sd.keys()                  # two containers, two prefixes
    three = {"net": {"module": {"model_state": {f"_orig_mod.{k}": v for k, v in sd.items()}}}}
    assert extract_state_dict(three).keys() == sd.keys()                   # three levels deep
    ema = {k: v + 1 for k, v in sd.items() if v.is_floating_point()}
    both = {"state_dict": sd, "state_dict_ema": ema, "model_ema": {}}
    assert torch.equal(extract_state_dict(both)["0.weight"], sd["0.weight"])
    assert torch.equal(extract_state_dict(both, use_ema=True)["0.weight"], ema["0.weight"])
    assert torch.equal(extract_state_dict({"ema": ema, "model": sd}, use_ema=True)["0.bias"], ema["0.bias"])
    assert torch.equal(extract_state_dict({"ema": ema, "model": sd})["0.bias"], sd["0.bias"])
    # a prefix only some keys carry stays
    mixed = {"module.a": torch.zeros(1), "b": torch.zeros(1)}
    assert set(extract_state_dict(mixed)) == {"module.a", "b"}
    # half the values tensors is a state dict (its non-tensor entries dropped); fewer is a container
    half = {"w": torch.zeros(1), "v": torch.zeros(1), "note": "x", "n": 3}
    assert set(extract_state_dict(half)) == {"w", "v"}
    assert set(extract_state_dict({"w": torch.zeros(1), "model": {"x": torch.ones(1)}, "a": 1})) == {"w"}  # 1 of 3
    assert set(extract_state_dict({"w": torch.zeros(1), "model": {"x": torch.ones(1)}, "a": 1, "b": 2})) == {"x"}
    with pytest.raises(CheckpointError) as e:
        extract_state_dict({"epoch": 3, "optimizer": {}, "a": 1, "b": 2, "c": 3, "d": 4, "e": 5})
    assert str(e.value) == "no tensors found in the checkpoint (top-level keys: epoch, optimizer, a, b, c, d)"
    with pytest.raises(CheckpointError, match="^checkpoint holds a list, not a state dict$"):
        extract_state_dict([1])


def test_load_state_dict_into_names_what_does_not_fit():
    from hvit_deploy.checkpoint import load_state_dict_into

    m = _tiny()
    sd = {k: v.clone() for k, v in m.state_dict().items()}
    assert load_state_dict_into(_tiny(), sd) == ([], [])
    no_tracked = {k: v for k, v in sd.items() if not k.endswith("num_batches_tracked")}
    assert load_state_dict_into(_tiny(), no_tracked) == ([], [])           # num_batches_tracked is never asked for
    short = {k: v for k, v in sd.items() if not k.startswith("1.")}
    with pytest.raises(CheckpointError) as e:
        load_state_dict_into(_tiny(), {**short, "x.a": torch.zeros(1)}, source="w.pth")
    assert str(e.value) == ("w.pth does not match the model: 4 missing key(s) (1.weight, 1.bias, 1.running_mean, "
                            "1.running_var) and 1 unexpected key(s) (x.a); is it the right variant? (strict=False "
                            "loads what matches)")
    extra = {f"x{i}": torch.zeros(1) for i in range(5)}
    with pytest.raises(CheckpointError) as e:
        load_state_dict_into(_tiny(), {**{k: v for k, v in sd.items() if k != "0.bias"}, **extra})
    assert str(e.value).startswith("checkpoint does not match the model: 1 missing key(s) (0.bias) and 5 unexpected "
                                   "key(s) (x0, x1, x2, x3, ...)")
    target = _tiny()
    with torch.no_grad():
        for p in target.parameters():
            p.zero_()
    missing, unexpected = load_state_dict_into(target, {**short, "x.a": torch.zeros(1)}, strict=False)
    assert missing == ["1.weight", "1.bias", "1.running_mean", "1.running_var"] and unexpected == ["x.a"]
    assert torch.equal(target[0].weight, m[0].weight) and not target[1].weight.any()   # what matched was loaded
    assert load_state_dict_into(_tiny(), short, strict=True, ignore_keys=("1.weight", "bias", "running_mean",
                                                                           "running_var")) == ([], [])
    bad = dict(sd, **{"0.weight": torch.zeros(4, 2), "1.bias": torch.zeros(4)})
    with pytest.raises(CheckpointError) as e:
        load_state_dict_into(_tiny(), bad, strict=False, source="b.pth")
    assert str(e.value) == ("b.pth does not fit this model: 2 tensors differ in shape, e.g. 0.weight (4, 2) vs model "
                            "(3, 2); 1.bias (4,) vs model (3,)")


def test_head_classes_and_drop_head():
    from hvit_deploy.checkpoint import drop_head, head_classes

    sd = {"head.weight": torch.zeros(7, 4), "head.bias": torch.zeros(7), "fc.weight": torch.zeros(5, 4),
          "blocks.0.w": torch.zeros(1), "header.w": torch.zeros(2)}
    assert head_classes(sd, ["head", "fc"]) == 7 and head_classes(sd, ["fc", "head"]) == 5
    assert head_classes(sd, ["classifier"]) is None
    assert head_classes({"head.weight": torch.tensor(3.0)}, ["head"]) is None    # a 0-d tensor is no head
    assert head_classes({"head.weight": "x"}, ["head"]) is None
    assert set(drop_head(sd, ["head", "fc"])) == {"blocks.0.w", "header.w"}     # "header." is not "head."


def test_read_checkpoint_errors_are_one_clear_line(tmp_path):
    from hvit_deploy.checkpoint import read_checkpoint as read, read_state_dict

    with pytest.raises(CheckpointError, match="^checkpoint is a directory, not a file: "):
        read(tmp_path)
    bad = tmp_path / "w.safetensors"
    bad.write_bytes(b"not safetensors")
    with pytest.raises(CheckpointError, match="^cannot read w.safetensors as safetensors: "):
        read(bad)
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"\x00" * 64)
    with pytest.raises(CheckpointError, match="^cannot read checkpoint junk.pth: "):
        read(junk, trust=True)
    with pytest.raises(CheckpointError, match=r"^cannot read checkpoint junk.pth \(corrupt or not a PyTorch file\)"):
        read(junk)
    sd = _tiny().state_dict()
    torch.save({"model": {f"module.{k}": v for k, v in sd.items()}, "max_accuracy": np.float64(81.5),
                "args": argparse.Namespace(lr=1e-3)}, tmp_path / "t.pth")
    raw = read(tmp_path / "t.pth")                                   # numpy scalar and Namespace are allowed
    assert raw["max_accuracy"] == 81.5 and raw["args"].lr == 1e-3
    renamed = read_state_dict(tmp_path / "t.pth", remap=lambda d: {"x." + k: v for k, v in d.items()})
    assert set(renamed) == {"x." + k for k in sd}


def test_load_checkpoint_reads_unwraps_renames_and_names_the_file(tmp_path):
    from hvit_deploy.checkpoint import load_checkpoint

    src = _tiny()
    sd = src.state_dict()
    torch.save({"state_dict_ema": {f"module.{k}": v + 1 if v.is_floating_point() else v for k, v in sd.items()},
                "state_dict": {f"module.{k}": v for k, v in sd.items()}}, tmp_path / "run.pth")
    m = _tiny()
    with torch.no_grad():
        m[0].weight.zero_()
    assert load_checkpoint(m, tmp_path / "run.pth") == ([], [])
    assert torch.equal(m[0].weight, src[0].weight)
    assert load_checkpoint(m, tmp_path / "run.pth", use_ema=True) == ([], [])
    assert torch.equal(m[0].weight, src[0].weight + 1)
    renamed = {f"old.{k}": v for k, v in sd.items()}
    torch.save(renamed, tmp_path / "old.pth")
    with pytest.raises(CheckpointError, match=r"^old\.pth does not match the model: 6 missing key\(s\) \(0\.weight, 0\.bias, 1\.weight, 1\.bias, \.\.\.\) and 6 unexpected"):
        load_checkpoint(_tiny(), tmp_path / "old.pth")
    remap = lambda d: {k[len("old."):]: v for k, v in d.items()}  # noqa: E731
    assert load_checkpoint(_tiny(), tmp_path / "old.pth", remap=remap) == ([], [])
    assert load_checkpoint(_tiny(), tmp_path / "old.pth", strict=False)[1] == [
        k for k in renamed if not k.endswith("num_batches_tracked")]                 # never asked for
    partial = {k: v for k, v in sd.items() if not k.startswith("1.")}
    torch.save(partial, tmp_path / "p.pth")
    assert load_checkpoint(_tiny(), tmp_path / "p.pth", ignore_keys=("1.weight", "1.bias", "1.running_mean",
                                                                     "1.running_var")) == ([], [])
    torch.save({"model": sd, "hook": Payload()}, tmp_path / "evil.pth")
    with pytest.raises(CheckpointError, match="refusing to unpickle evil.pth"):
        load_checkpoint(_tiny(), tmp_path / "evil.pth")
    assert load_checkpoint(_tiny(), tmp_path / "evil.pth", trust=True) == ([], [])


def test_error_text_helpers():
    from hvit_deploy.checkpoint import _short, _unpickler_reason

    assert _short(ValueError("a\n  b\tc ")) == "a b c"                       # whitespace collapsed
    assert _short(ValueError("x" * 300)) == "x" * 300                        # 300 characters fit
    assert _short(ValueError("x" * 301)) == "x" * 300 + "..."                # more are cut
    assert _short(KeyError()) == "KeyError"                                  # no text: the type
    long = "Weights only load failed. Long advice...\n\nWeightsUnpickler error: Unsupported global: GLOBAL os.system\n" \
           "Check the documentation of torch.load to learn more."
    assert _unpickler_reason(pickle.UnpicklingError(long)) == "Unsupported global: GLOBAL os.system"
    assert _unpickler_reason(pickle.UnpicklingError("WeightsUnpickler error:")) == "WeightsUnpickler error:"
    assert _unpickler_reason(pickle.UnpicklingError("first line\nsecond")) == "first line"
    assert _unpickler_reason(pickle.UnpicklingError("")) == "UnpicklingError"


class _Evil1(Payload): pass  # noqa: E701
class _Evil2(Payload): pass  # noqa: E701
class _Evil3(Payload): pass  # noqa: E701
class _Evil4(Payload): pass  # noqa: E701
class _Evil5(Payload): pass  # noqa: E701


def test_blocked_globals_names_at_most_five_and_never_the_safe_ones(tmp_path):
    import builtins

    from hvit_deploy.checkpoint import _blocked_globals

    torch.save({"a": np.float64(1.0), "n": argparse.Namespace(x=1), "o": builtins.setattr, "e": builtins.exec,
                "v": builtins.eval, "c": builtins.compile, "g": builtins.getattr, "i": builtins.input}, tmp_path / "m.pth")
    names = _blocked_globals(tmp_path / "m.pth")
    assert names == ["builtins.compile", "builtins.eval", "builtins.exec", "builtins.getattr",
                     "builtins.input"]                                       # six unsafe: the first five, sorted
    assert not any("numpy" in n or "Namespace" in n for n in names)
    torch.save({"n": argparse.Namespace(x=1), "a": np.float64(2.0), "d": np.dtype("float32")}, tmp_path / "ok.pth")
    assert _blocked_globals(tmp_path / "ok.pth") == []
    (tmp_path / "junk.pth").write_bytes(b"junk")
    assert _blocked_globals(tmp_path / "junk.pth") == []                     # unreadable: nothing to name
    raw = read_checkpoint(tmp_path / "ok.pth")                               # all of them on the safe list
    assert raw["n"].x == 1 and raw["a"] == 2.0 and raw["d"] == np.dtype("float32")


# ------------------------------------------------- what real release files carry, and every message word for word
# (files from numpy 1.x and from GPU training are made by rewriting the names in a real torch.save's data.pkl:
# protocol 2 writes a global as text, a string with its length in front)

def _rewrite_pickle(path, old: bytes, new: bytes) -> None:
    import zipfile

    with zipfile.ZipFile(path) as z:
        items = [(info.filename, z.read(info.filename)) for info in z.infolist()]
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as z:
        for name, data in items:
            if name.endswith("/data.pkl"):
                assert old in data
                data = data.replace(old, new)
            z.writestr(name, data)


NUMPY1_SCALAR = (b"cnumpy._core.multiarray\nscalar\n", b"cnumpy.core.multiarray\nscalar\n")
ON_GPU = (b"X\x03\x00\x00\x00cpu", b"X\x06\x00\x00\x00cuda:0")   # the storages' location tag


def test_release_written_under_numpy1_on_a_gpu_loads_on_this_cpu(tmp_path):
    """Official releases were saved from GPU training (storages tagged cuda:0) under numpy 1.x (a numpy scalar
    pickled as numpy.core.multiarray.scalar, a name numpy 2 moved). Both must load here, safely and trusted.
    (The numpy 1.x name was refused as "corrupt or not a PyTorch file" before it was allowlisted.)"""
    sd = _tiny().state_dict()
    path = tmp_path / "release.pth"
    torch.save({"model": sd, "max_accuracy": np.float64(81.5), "epoch": 299}, path)
    _rewrite_pickle(path, *NUMPY1_SCALAR)
    _rewrite_pickle(path, *ON_GPU)
    assert "numpy.core.multiarray.scalar" in torch.serialization.get_unsafe_globals_in_checkpoint(str(path))
    for trust in (False, True):
        raw = read_checkpoint(path, trust=trust)
        assert raw["max_accuracy"] == 81.5 and type(raw["max_accuracy"]) is np.float64 and raw["epoch"] == 299
        assert raw["model"].keys() == sd.keys()
        assert all(v.device.type == "cpu" and torch.equal(v, sd[k]) for k, v in raw["model"].items())


def test_safe_read_stays_safe_when_the_environment_forces_torchs_unsafe_default(tmp_path, monkeypatch):
    """TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1 turns torch.load's default to unpickling anything; the loader passes
    weights_only=True itself, so a file with pickled code is still refused (and read only when trusted)."""
    from hvit_deploy.checkpoint import read_state_dict

    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
    torch.save({"model": _tiny().state_dict(), "hook": Payload()}, tmp_path / "evil.pth")
    with pytest.raises(CheckpointError, match="^refusing to unpickle evil.pth: "):
        read_checkpoint(tmp_path / "evil.pth")
    with pytest.raises(CheckpointError, match="^refusing to unpickle evil.pth: "):
        read_state_dict(tmp_path / "evil.pth")                          # not trusted unless asked
    assert read_state_dict(tmp_path / "evil.pth", trust=True).keys() == _tiny().state_dict().keys()


def test_refusal_names_only_the_unsafe_objects(tmp_path):
    """A numpy 1.x training file with a real yacs config, a numpy dtype class and scalar, and two objects that run
    code: the message names exactly the two, comma-separated and sorted (torch hands them over as a set, in an
    order that changes with the process's hash seed)."""
    import builtins

    path = tmp_path / "evil.pth"
    torch.save({"model": _tiny().state_dict(), "config": _swin_style_config(), "acc": np.float64(1.0),
                "dtype": type(np.dtype("float32")), "hook": Payload(), "log": builtins.eval}, path)
    _rewrite_pickle(path, *NUMPY1_SCALAR)
    found = torch.serialization.get_unsafe_globals_in_checkpoint(str(path))
    assert {"yacs.config.CfgNode", "numpy.core.multiarray.scalar", "numpy.dtypes.Float32DType"} <= set(found)
    system = f"{os.system.__module__}.system"   # posix.system here
    with pytest.raises(CheckpointError) as e:
        read_checkpoint(path)
    assert system > "builtins.eval"   # eval, not print: Ray (its tests may run earlier in this process) swaps print
    assert str(e.value) == ("refusing to unpickle evil.pth: it holds objects outside the safe list (builtins.eval, "
                            f"{system}); re-save only the state dict, or pass --trust-checkpoint "
                            "(trust_checkpoint=True) if you trust the file, which runs its pickled code")


def test_read_errors_word_for_word(tmp_path, monkeypatch):
    import sys

    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"\x00" * 64)
    with pytest.raises(CheckpointError, match=r"^cannot read checkpoint junk\.pth: invalid load key, '\\x00'\.$"):
        read_checkpoint(junk, trust=True)
    with pytest.raises(CheckpointError, match=r"^cannot read checkpoint junk\.pth \(corrupt or not a PyTorch file\): "
                                              r"Unsupported operand 0$"):
        read_checkpoint(junk)
    torch.save(_tiny().state_dict(), tmp_path / "cut.pth")
    data = (tmp_path / "cut.pth").read_bytes()
    (tmp_path / "cut.pth").write_bytes(data[: len(data) // 2])                  # no zip directory: a RuntimeError
    with pytest.raises(CheckpointError, match=r"^cannot read checkpoint cut\.pth \(corrupt or not a PyTorch file\): "
                                              r"RuntimeError: PytorchStreamReader failed reading zip archive: "
                                              r"failed finding central directory\. .{100,}\.\.\.$"):
        read_checkpoint(tmp_path / "cut.pth")
    bad = tmp_path / "w.safetensors"
    bad.write_bytes(b"not safetensors")
    with pytest.raises(CheckpointError, match=r"^cannot read w\.safetensors as safetensors: Error while deserializing "
                                              r"header: header too large$"):
        read_checkpoint(bad)
    monkeypatch.setitem(sys.modules, "safetensors.torch", None)             # the package not installed
    with pytest.raises(CheckpointError, match=r"^reading \.safetensors needs the safetensors package$"):
        read_checkpoint(bad)


def test_unpickler_reason_keeps_the_text_after_the_first_marker():
    from hvit_deploy.checkpoint import _unpickler_reason

    text = "advice\nWeightsUnpickler error: Unsupported global: GLOBAL a.WeightsUnpickler error: b\nmore"
    assert _unpickler_reason(pickle.UnpicklingError(text)) == "Unsupported global: GLOBAL a.WeightsUnpickler error: b"


def test_containers_unwrap_at_most_three_levels():
    from hvit_deploy.checkpoint import extract_state_dict

    sd = _tiny().state_dict()
    assert extract_state_dict({"model": {"state_dict": {"net": sd}}}).keys() == sd.keys()
    with pytest.raises(CheckpointError, match=r"^no tensors found in the checkpoint \(top-level keys: net\)$"):
        extract_state_dict({"model": {"state_dict": {"module": {"net": sd}}}})


def test_load_state_dict_into_lists_and_ignores_exactly():
    from hvit_deploy.checkpoint import load_state_dict_into

    sd = _tiny().state_dict()
    wrong = {k: torch.zeros(9) for k in sd if not k.endswith("num_batches_tracked")}    # six tensors, all 1-d of 9
    with pytest.raises(CheckpointError) as e:
        load_state_dict_into(_tiny(), wrong, source="w.pth")
    assert str(e.value) == ("w.pth does not fit this model: 6 tensors differ in shape, e.g. 0.weight (9,) vs model "
                            "(3, 2); 0.bias (9,) vs model (3,); 1.weight (9,) vs model (3,)")
    five_missing = {"0.weight": sd["0.weight"], **{f"x{i}": torch.zeros(1) for i in range(4)}}
    with pytest.raises(CheckpointError) as e:
        load_state_dict_into(_tiny(), five_missing, source="w.pth")
    assert str(e.value) == ("w.pth does not match the model: 5 missing key(s) (0.bias, 1.weight, 1.bias, "
                            "1.running_mean, ...) and 4 unexpected key(s) (x0, x1, x2, x3); is it the right variant? "
                            "(strict=False loads what matches)")
    # an ignore key is a suffix of the name (as in the factory's backbone filter), not only a dotted component
    no_stats = {k: v for k, v in sd.items() if "running" not in k}
    assert load_state_dict_into(_tiny(), no_stats, ignore_keys=("running_mean", "_var")) == ([], [])


def test_read_state_dict_defaults_are_safe_and_plain(tmp_path):
    from hvit_deploy.checkpoint import head_classes, read_state_dict

    sd = _tiny().state_dict()
    ema = {k: v + 1 if v.is_floating_point() else v for k, v in sd.items()}
    torch.save({"state_dict": sd, "state_dict_ema": ema}, tmp_path / "w.pth")
    assert torch.equal(read_state_dict(tmp_path / "w.pth")["0.weight"], sd["0.weight"])           # not the EMA
    assert torch.equal(read_state_dict(tmp_path / "w.pth", use_ema=True)["0.weight"], ema["0.weight"])
    torch.save({"model": sd, "hook": Payload()}, tmp_path / "evil.pth")
    with pytest.raises(CheckpointError, match="^refusing to unpickle evil.pth: "):
        read_state_dict(tmp_path / "evil.pth")
    assert read_state_dict(tmp_path / "evil.pth", trust=True).keys() == sd.keys()
    assert head_classes({"head.weight": torch.zeros(7)}, ["head"]) == 7                 # the first dimension
