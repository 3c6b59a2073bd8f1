"""Profile one pruned prefill of a full-size model on the GPU: the CUDA time of every
``@machinery`` hook (visiondrop.timing ranges) and the top kernels, against the full model.

    PYTHONPATH=src python3 scripts/profile_prefill.py [--config llava-1.5-7b] [--budget 64] [--batch 32]
"""

import argparse
import collections

import torch
from torch.profiler import ProfilerActivity, profile

import visiondrop
from visiondrop.bench.latency import build_model, make_inputs
from visiondrop.timing import measure_machinery


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--config", default="llava-1.5-7b")
    parser.add_argument("--budget", type=int, default=64)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--method", default="visiondrop")
    args = parser.parse_args()
    model = build_model(args.config, "bfloat16", "cuda", "sdpa")
    inputs = make_inputs(model, args.batch, 64)
    with torch.inference_mode(), visiondrop.apply(model, args.method, budget=args.budget):
        for _ in range(3):
            model(**inputs, use_cache=False, logits_to_keep=1)
        torch.cuda.synchronize()
        with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof, measure_machinery():
            model(**inputs, use_cache=False, logits_to_keep=1)
            torch.cuda.synchronize()
    events = prof.key_averages()
    total = sum(e.self_device_time_total for e in events) / 1e3
    print(f"{args.method} b{args.batch}: CUDA kernel time {total:.1f} ms")
    for event in sorted(events, key=lambda e: -e.device_time_total):
        if event.key.startswith("visiondrop::"):
            print(f"  {event.key:60s} calls {event.count:3d}  cuda {event.device_time_total / 1e3:7.2f} ms  "
                  f"cpu {event.cpu_time_total / 1e3:7.2f} ms")
    inside = collections.Counter()
    calls = collections.Counter()
    for event in prof.events():
        parent = event.cpu_parent
        while parent is not None and not parent.name.startswith("visiondrop::"):
            parent = parent.cpu_parent
        if parent is not None and not event.name.startswith("visiondrop::"):
            inside[event.name] += event.self_device_time_total
            calls[event.name] += 1
    print("\nops inside the machinery by their own device time (ms, calls):")
    for name, time_us in inside.most_common(25):
        print(f"  {time_us / 1e3:7.3f}  {calls[name]:5d}  {name}")
    print(f"  total {sum(inside.values()) / 1e3:.2f} ms in {sum(calls.values())} ops")
    print(events.table(sort_by="self_device_time_total", row_limit=15, max_name_column_width=60))


if __name__ == "__main__":
    main()
