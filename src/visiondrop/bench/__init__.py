"""Measurement tools built on the library: analytic FLOPs (:mod:`.flops`)."""

from .flops import FlopsBreakdown, prefill_flops

__all__ = ["FlopsBreakdown", "prefill_flops"]
