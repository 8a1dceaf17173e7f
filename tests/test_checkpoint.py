"""Checkpoint loading: official container formats, prefixes, renames, safe unpickling, clear errors.

The format tests run on the smallest model (EfficientMod-xxs); the Twins-specific shape checks keep Twins. The
Swin-style training files carry a REAL ``yacs.config.CfgNode`` (yacs is in the dev extra), whose ``__dict__``
holds a set and dicts, as the official SMT and Swin-ACmix releases do."""
from __future__ import annotations

import os
import pickle

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
