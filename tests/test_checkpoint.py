"""Checkpoint loading: official container formats, prefixes, renames, safe unpickling, clear errors."""
from __future__ import annotations

import os
import pickle

import pytest
import torch

from hvit_deploy import create_model
from hvit_deploy.checkpoint import read_checkpoint
from hvit_deploy.errors import CheckpointError
from hvit_deploy.testing import save_training_checkpoint


@pytest.fixture(scope="module")
def reference():
    """A Twins-PCPVT-S with non-default weights, as a stand-in for an official release."""
    torch.manual_seed(1)
    m = create_model("twins_pcpvt_s")
    with torch.no_grad():
        for p in m.parameters():
            p.add_(torch.randn_like(p) * 0.01)
    return m


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
    loaded = create_model("twins_pcpvt_s", checkpoint=path)
    assert _same_weights(reference, loaded)
    assert not loaded.training


def test_ema_weights_preferred_on_request(tmp_path, reference):
    plain = create_model("twins_pcpvt_s").state_dict()
    path = tmp_path / "both.pth"
    torch.save({"state_dict": plain, "state_dict_ema": reference.state_dict()}, path)
    assert _same_weights(reference, create_model("twins_pcpvt_s", checkpoint=path, use_ema=True))
    assert not _same_weights(reference, create_model("twins_pcpvt_s", checkpoint=path))


def test_crossvit_official_keys_are_renamed(tmp_path):
    m = create_model("crossvit_ti")
    official = {k.replace("pos_embed_", "pos_embed.").replace("cls_token_", "cls_token."): v
                for k, v in m.state_dict().items()}
    assert "pos_embed.0" in official and "cls_token.1" in official
    path = tmp_path / "crossvit_tiny_224.pth"
    torch.save(official, path)
    loaded = create_model("crossvit_ti", checkpoint=path)
    assert torch.equal(loaded.pos_embed_0, m.pos_embed_0)


def test_wrong_variant_is_refused_with_shapes(tmp_path, reference):
    path = tmp_path / "w.pth"
    torch.save(reference.state_dict(), path)
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
        create_model("twins_pcpvt_s", checkpoint=path)
    msg = str(e.value)
    assert "1 missing key(s) (head.weight)" in msg and "1 unexpected key(s) (extra.weight)" in msg
    loaded = create_model("twins_pcpvt_s", checkpoint=path, strict=False)
    assert torch.equal(loaded.head.bias, reference.head.bias)


def test_missing_file(tmp_path):
    with pytest.raises(CheckpointError, match="checkpoint not found"):
        create_model("twins_pcpvt_s", checkpoint=tmp_path / "nope.pth")


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
        create_model("twins_pcpvt_s", checkpoint=path)


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
    loaded = create_model("twins_pcpvt_s", checkpoint=path, trust_checkpoint=True)
    assert _same_weights(reference, loaded)


def test_not_a_state_dict(tmp_path):
    path = tmp_path / "list.pth"
    torch.save([1, 2, 3], path)
    with pytest.raises(CheckpointError, match="not a state dict"):
        create_model("twins_pcpvt_s", checkpoint=path)


def test_safetensors(tmp_path, reference):
    from safetensors.torch import save_file

    path = tmp_path / "w.safetensors"
    save_file({k: v.contiguous() for k, v in reference.state_dict().items()}, str(path))
    assert _same_weights(reference, create_model("twins_pcpvt_s", checkpoint=path))
