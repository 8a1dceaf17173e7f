"""Tiny models for the cluster tests (``--plugin tests/cluster_models.py``), self-contained because the file
is shipped alone to the Ray workers.

``cluster_tiny_a`` / ``cluster_tiny_b``: small conv + attention hybrids at 64×64 whose weights are drawn from a
fixed seed, so a local export and a cluster export of the same model are byte for byte the same artifact.
``cluster_crash_once``: kills its own process the first time it is built (the marker file named by
``HVIT_TEST_CRASH_MARKER`` records that it did), so the retry of its Ray task succeeds.
``cluster_crash_always``: kills its own process every time it is built.
"""
from __future__ import annotations

import os
from pathlib import Path

import torch
import torch.nn as nn

from hvit_deploy.registry import ModelSpec, _MODELS, add_spec

FAMILY = "cluster_test"


class Tiny(nn.Module):
    def __init__(self, num_classes: int = 10, dim: int = 32, heads: int = 2, seed: int = 0):
        super().__init__()
        g = torch.random.fork_rng()  # seeded weights without touching the caller's generator
        with g:
            torch.manual_seed(seed)
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


def cluster_tiny_a(**kwargs):
    return Tiny(dim=32, seed=1, **kwargs)


def cluster_tiny_b(**kwargs):
    return Tiny(dim=48, heads=3, seed=2, **kwargs)


def cluster_crash_once(**kwargs):
    marker = Path(os.environ["HVIT_TEST_CRASH_MARKER"])
    if not marker.exists():
        marker.write_text(str(os.getpid()))
        os._exit(1)  # the whole worker process goes, as when its node dies
    return Tiny(seed=3, **kwargs)


def cluster_crash_always(**kwargs):
    os._exit(1)


for _name, _fn in (("cluster_tiny_a", cluster_tiny_a), ("cluster_tiny_b", cluster_tiny_b),
                   ("cluster_crash_once", cluster_crash_once), ("cluster_crash_always", cluster_crash_always)):
    if _name not in _MODELS:
        add_spec(ModelSpec(name=_name, family=FAMILY, builder=_fn, input_size=(3, 64, 64)))
