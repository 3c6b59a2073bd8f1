"""Opt-in timing of the pruning machinery, for ``visiondrop bench``'s "machinery share".

The adapters' and the decoder pruner's hook bodies are marked ``@machinery``. While
:func:`measure_machinery` is active, each call records CUDA events around it (or
``perf_counter`` on the CPU). On the GPU the time between two events is the stretch of
the device's timeline the hook body occupied: its kernels, plus any idle gap while the
host was still issuing them, so it counts what the machinery costs the wall clock whether
the run is bound by the host (batch 1) or by the device (large batches). Off, a marked
call costs one attribute check.
"""

from __future__ import annotations

import contextlib
import functools
import time
from contextlib import contextmanager

import torch


class _Recorder:
    def __init__(self) -> None:
        self.active = False
        self.spans: list = []  # (start, end) CUDA events, or float milliseconds

    def total_ms(self) -> float:
        total = 0.0
        for span in self.spans:
            if isinstance(span, float):
                total += span
            else:
                span[1].synchronize()
                total += span[0].elapsed_time(span[1])
        return total


RECORDER = _Recorder()


def machinery(function):
    """Mark a hook body as pruning machinery (timed under :func:`measure_machinery`)."""
    @functools.wraps(function)
    def wrapper(*args, **kwargs):
        if not RECORDER.active:
            return function(*args, **kwargs)
        # the range names the hook in torch.profiler traces (scripts/profile_prefill.py)
        with torch.profiler.record_function(f"visiondrop::{function.__qualname__}"):
            if torch.cuda.is_available() and torch.cuda.is_initialized():
                start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                start.record()
                try:
                    return function(*args, **kwargs)
                finally:
                    end.record()
                    RECORDER.spans.append((start, end))
            begin = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                RECORDER.spans.append((time.perf_counter() - begin) * 1e3)
    return wrapper


def named_range(name: str):
    """A ``visiondrop::<name>`` profiler range inside a marked hook (one LLM stage, say),
    while :func:`measure_machinery` is active; otherwise nothing."""
    if not RECORDER.active:
        return contextlib.nullcontext()
    return torch.profiler.record_function(f"visiondrop::{name}")


@contextmanager
def measure_machinery():
    """``with measure_machinery() as spent: ...``; then ``spent()`` is the milliseconds
    the marked hook bodies took inside the block (read it after the block)."""
    RECORDER.active, RECORDER.spans = True, []
    try:
        yield RECORDER.total_ms
    finally:
        RECORDER.active = False
