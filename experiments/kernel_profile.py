"""Per-kernel GPU time from a ``jax.profiler`` trace, and each kernel's JAX name scope from the
post-optimisation HLO of the same program (shared by the step benchmarks)."""

from __future__ import annotations

import collections
import glob
import os
import re


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


def hlo_scopes(hlo_text: str) -> dict[str, str]:
    """``{kernel name: JAX name scope}`` from a post-optimisation HLO dump (``--xla_dump_to``,
    ``*after_optimizations.txt``): XLA names each fusion's kernel after the instruction (``.`` → ``_``),
    and the instruction's ``op_name`` metadata is the JAX scope it came from (e.g. ``jvp(VGG5)/spinal/...``;
    the loop's ``jit(...)/while/body/eval_jaxpr/`` or ``.../closed_call/`` prefix dropped). Library kernels
    (cuDNN, cuBLAS), Pallas kernels and copies are not named after instructions and are absent."""
    scopes = {}
    for line in hlo_text.splitlines():
        m = re.match(r"\s*(?:ROOT )?%([\w.\-]+) = .*?op_name=\"([^\"]*)\"", line)
        if m:
            scope = re.sub(r"^.*?/while/body/(eval_jaxpr/|closed_call/)*", "", m.group(2))
            scopes[re.sub(r"[.\-]", "_", m.group(1))] = scope
    return scopes


#: ``scope_totals``' key for kernels not named after an HLO instruction (cuDNN, cuBLAS, Pallas, copies).
NO_SCOPE = "(no scope: library, Pallas, copies)"


def scope_totals(kernels: dict, scopes: dict[str, str], depth: int = 2) -> dict[str, list[float]]:
    """``kernels`` (``kernel_table``'s result) summed by the first ``depth`` components of their scope
    (e.g. ``jvp(VGG5)/spinal`` for the spinal head's forward, ``transpose(jvp(VGG5))/spinal`` for its
    backward): ``{scope prefix: [calls a step, us a step]}``, largest first; kernels without a scope under
    ``NO_SCOPE``."""
    totals: dict[str, list[float]] = {}
    for name, (calls, us) in kernels.items():
        scope = scopes.get(name)
        key = "/".join(scope.split("/")[:depth]) if scope else NO_SCOPE
        total = totals.setdefault(key, [0.0, 0.0])
        total[0] += calls
        total[1] += us
    return dict(sorted(totals.items(), key=lambda item: -item[1][1]))
