"""Tiny models for the hvit-bench tests, loaded with ``--plugin tests/bench_models.py``.

``bench_tiny`` is a small hybrid (conv stem, one attention block, MLP) at 64×64 that runs in well under a
millisecond, so a test can spawn workers, export to ONNX and OpenVINO and time it in seconds.
``bench_crash`` aborts its process on the first forward, to check that one crashing entry does not sink the rest.
``bench_batch1`` takes one image per call only (as a model with a baked batch does), to check that a batch sweep
records the batches it cannot take as failed entries and times the rest.
"""
from __future__ import annotations

import os

from hvit_deploy.registry import ModelSpec, _MODELS, add_spec

# torch is imported when a model is built, not when the plugin is loaded: hvit-bench's workers load every plugin, and
# one timing ONNX Runtime or OpenVINO then starts without torch (as it does for the zoo's models)
_NETS: dict[str, type] = {}


def _nets() -> dict[str, type]:
    if _NETS:
        return _NETS
    import torch.nn as nn

    class TinyHybrid(nn.Module):
        def __init__(self, num_classes: int = 10, dim: int = 32, heads: int = 2):
            super().__init__()
            self.heads = heads
            self.stem = nn.Sequential(nn.Conv2d(3, dim, 4, 4), nn.BatchNorm2d(dim), nn.GELU())
            self.norm1 = nn.LayerNorm(dim)
            self.qkv = nn.Linear(dim, 3 * dim)
            self.proj = nn.Linear(dim, dim)
            self.norm2 = nn.LayerNorm(dim)
            self.mlp = nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim))
            self.head = nn.Linear(dim, num_classes)

        def forward(self, x):
            x = self.stem(x).flatten(2).transpose(1, 2)  # B, N, C
            b, n, c = x.shape
            q, k, v = self.qkv(self.norm1(x)).reshape(b, n, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
            a = (q @ k.transpose(-2, -1) * (c // self.heads) ** -0.5).softmax(-1)
            x = x + self.proj((a @ v).transpose(1, 2).reshape(b, n, c))
            x = x + self.mlp(self.norm2(x))
            return self.head(x.mean(1))

    class Crash(TinyHybrid):
        def forward(self, x):
            os.abort()

    class OneImage(TinyHybrid):
        def forward(self, x):
            if x.shape[0] != 1:
                raise ValueError(f"bench_batch1 takes one image per call, not {x.shape[0]}")
            return super().forward(x)

    _NETS.update(TinyHybrid=TinyHybrid, Crash=Crash, OneImage=OneImage)
    return _NETS


def __getattr__(name: str):  # the classes by name, for the tests that build them directly (TinyHybrid)
    if name in ("TinyHybrid", "Crash", "OneImage"):
        return _nets()[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def bench_tiny(**kwargs):
    return _nets()["TinyHybrid"](**kwargs)


def bench_crash(**kwargs):
    return _nets()["Crash"](**kwargs)


def bench_batch1(**kwargs):
    return _nets()["OneImage"](**kwargs)


for _name, _fn in (("bench_tiny", bench_tiny), ("bench_crash", bench_crash), ("bench_batch1", bench_batch1)):
    if _name not in _MODELS:
        add_spec(ModelSpec(name=_name, family="bench_test", builder=_fn, input_size=(3, 64, 64)))
