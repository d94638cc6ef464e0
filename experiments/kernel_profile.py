"""Per-kernel GPU time from a ``jax.profiler`` trace (shared by the step benchmarks)."""

from __future__ import annotations

import collections
import glob
import os


def kernel_table(trace_dir: str, steps: int, top: int = 25) -> dict:
    """Per-kernel GPU time of a jax.profiler trace: totals per stream and the ``top`` kernels by time.

    Returns every kernel of the compute streams: ``{name: [calls per step, us per step]}``."""
    from jax.profiler import ProfileData

    files = glob.glob(os.path.join(trace_dir, "**", "*.xplane.pb"), recursive=True)
    data = ProfileData.from_file(files[0])
    table: dict[str, list[float]] = {}
    for plane in data.planes:
        if not plane.name.startswith("/device:GPU"):
            continue
        for line in plane.lines:
            events = list(line.events)
            if not events:
                continue
            busy = sum(e.duration_ns for e in events)
            span = max(e.end_ns for e in events) - min(e.start_ns for e in events)
            print(f"  [{plane.name} | {line.name}] {len(events) / steps:.1f} events/step, "
                  f"busy {busy / steps / 1e3:.1f} us/step, span {span / steps / 1e3:.1f} us/step")
            if "stream" not in line.name.lower():
                continue
            total: collections.Counter[str] = collections.Counter()
            count: collections.Counter[str] = collections.Counter()
            for e in events:
                total[e.name[:160]] += e.duration_ns
                count[e.name[:160]] += 1
            for name, ns in total.most_common(top):
                print(f"    {ns / steps / 1e3:8.1f} us/step {count[name] / steps:5.1f}x  {name}")
            for name, ns in total.items():
                calls, us = table.get(name, [0.0, 0.0])
                table[name] = [calls + count[name] / steps, us + ns / steps / 1e3]
    return table
