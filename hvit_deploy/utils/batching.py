"""Running a batch-B function over N rows, the one way the toolkit does it: the last chunk is padded by repeating
the last row (so a static-batch artifact can take it) and the padding's outputs are dropped."""
from __future__ import annotations

from typing import Callable, Sequence

import numpy as np


def chunks(arrays: np.ndarray, batch: int) -> list[np.ndarray]:
    """``arrays`` (N, ...) as contiguous (batch, ...) chunks, the last one padded with copies of the last row."""
    if batch < 1:
        raise ValueError(f"batch must be at least 1, not {batch}")
    n = len(arrays)
    pad = (-n) % batch
    padded = arrays if pad == 0 else np.concatenate([arrays, np.repeat(arrays[-1:], pad, 0)])
    return [np.ascontiguousarray(padded[i:i + batch]) for i in range(0, len(padded), batch)]


def run_in_batches(fn: Callable[[list[np.ndarray]], Sequence[np.ndarray]], arrays: np.ndarray,
                   batch: int) -> np.ndarray:
    """``fn(chunks)`` -> one output per chunk, each (batch, ...); returns the N rows' outputs, flattened per row
    to (N, -1) (the padding's rows dropped)."""
    n = len(arrays)
    if n == 0:
        return np.zeros((0, 0), dtype=np.float32)
    outs = fn(chunks(arrays, batch))
    return np.concatenate([np.asarray(o).reshape(batch, -1) for o in outs])[:n]


def whole_chunks(arrays: np.ndarray, batch: int) -> list[np.ndarray]:
    """Whole (batch, ...) chunks only, for calibration statistics (a padded row would weigh twice there): the
    tail that does not fill a batch is left out, and a set smaller than one batch is repeated to fill one."""
    if len(arrays) == 0:
        return []
    if len(arrays) < batch:
        arrays = np.concatenate([arrays] * (batch // len(arrays) + 1))[:batch]
    return chunks(arrays[:len(arrays) // batch * batch], batch)
