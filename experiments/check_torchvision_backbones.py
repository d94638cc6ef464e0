"""Check spinal_jax's ImageNet backbones against real torchvision models.

Builds torchvision ``vgg19_bn``, ``wide_resnet101_2``, ``resnet18`` and ``alexnet`` with random
weights and random BatchNorm running statistics, converts each state dict with
``spinal_jax.interop.torch.load_state_dict`` and compares eval-mode logits in float32
(``jax_default_matmul_precision="highest"``, TF32 off in torch). Writes
``experiments/results/torchvision_backbones.{json,md}`` (atomically).

    python experiments/check_torchvision_backbones.py            # GPU machine, 224x224, batch 4
    python experiments/check_torchvision_backbones.py --quick    # CPU, small inputs, no files written
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np

from spinal_jax.files import write_atomic

RESULTS = Path(__file__).resolve().parent / "results"
NAMES = ("resnet18", "alexnet", "vgg19_bn", "wide_resnet101_2")


def _randomise_bn(net, torch, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.weight.copy_(1 + 0.2 * torch.randn(m.weight.shape, generator=g))
                m.bias.copy_(0.2 * torch.randn(m.bias.shape, generator=g))
                m.running_mean.copy_(0.2 * torch.randn(m.running_mean.shape, generator=g))
                m.running_var.copy_(0.5 + torch.rand(m.running_var.shape, generator=g))


def check(name: str, size: int, batch: int, num_classes: int, device: str) -> dict:
    """Convert one torchvision model and compare logits; returns a result row."""
    import jax
    import jax.numpy as jnp
    import torch
    import torchvision

    from spinal_jax import models
    from spinal_jax.interop.torch import load_state_dict, to_state_dict

    torch.manual_seed(0)
    net = getattr(torchvision.models, name)(weights=None, num_classes=num_classes)
    _randomise_bn(net, torch, 0)
    net.eval().to(device)
    x = torch.randn((batch, 3, size, size), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        want = net(x.to(device)).cpu().numpy()
    t0 = time.perf_counter()
    model = models.get(name, num_classes, "default")
    variables = load_state_dict(model, net.state_dict())
    convert_s = time.perf_counter() - t0
    x_nhwc = jnp.asarray(x.permute(0, 2, 3, 1).numpy())
    got = np.asarray(jax.jit(lambda v, xx: model.apply(v, xx, train=False))(variables, x_nhwc))
    back = to_state_dict(model, variables)
    sd = {k: v.cpu().numpy() for k, v in net.state_dict().items() if not k.endswith("num_batches_tracked")}
    round_trip = set(back) == set(sd) and all(np.array_equal(back[k], sd[k]) for k in sd)
    err = float(np.max(np.abs(got - want)))
    scale = float(np.max(np.abs(want)))
    return {
        "model": name,
        "input": [batch, size, size, 3],
        "num_classes": num_classes,
        "params": int(sum(p.numel() for p in net.parameters())),
        "max_abs_logit": scale,
        "max_abs_diff": err,
        "rel_diff": err / max(scale, 1e-12),
        "argmax_equal": bool(np.array_equal(got.argmax(-1), want.argmax(-1))),
        "state_dict_round_trip_exact": bool(round_trip),
        "convert_s": round(convert_s, 2),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="CPU smoke run on small inputs; writes nothing")
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--tol", type=float, default=1e-4, help="allowed max|diff| / max|logit|")
    args = p.parse_args(argv)
    try:
        import torch
        import torchvision
    except ImportError as e:
        print(f"skipped: {e} (torchvision is needed; run on the GPU machine)")
        return 0
    import jax

    jax.config.update("jax_default_matmul_precision", "highest")
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    device = "cuda" if torch.cuda.is_available() and not args.quick else "cpu"
    size, batch = (64, 2) if args.quick else (args.size, args.batch)
    names = ("resnet18", "alexnet") if args.quick else NAMES
    rows = []
    for name in names:
        s = max(size, 96) if name == "alexnet" else size
        row = check(name, s, batch, 1000, device)
        row["ok"] = row["rel_diff"] <= args.tol and row["state_dict_round_trip_exact"]
        rows.append(row)
        print(json.dumps(row))
    ok = all(r["ok"] for r in rows)
    if args.quick:
        return 0 if ok else 1
    meta = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": "python " + " ".join([Path(sys.argv[0]).as_posix(), *(argv if argv is not None else sys.argv[1:])]),
        "machine": {
            "platform": platform.platform(),
            "python": platform.python_version(),
            "jax_devices": [str(d) for d in jax.devices()],
            "torch_device": torch.cuda.get_device_name(0) if device == "cuda" else "cpu",
        },
        "versions": {"jax": jax.__version__, "torch": torch.__version__, "torchvision": torchvision.__version__,
                     "flax": __import__("flax").__version__},
        "precision": "float32; jax_default_matmul_precision=highest; torch TF32 off",
        "tolerance_rel": args.tol,
        "all_ok": ok,
        "results": rows,
    }
    write_atomic(RESULTS / "torchvision_backbones.json", json.dumps(meta, indent=2) + "\n")
    lines = [
        "# spinal_jax ImageNet backbones vs torchvision",
        "",
        f"- date: {meta['date']}",
        f"- command: `{meta['command']}`",
        f"- machine: {meta['machine']['torch_device']}; JAX devices {meta['machine']['jax_devices']}; {meta['machine']['platform']}",
        "- versions: " + ", ".join(f"{k} {v}" for k, v in meta["versions"].items()),
        f"- {meta['precision']}; random weights and random BatchNorm running statistics; eval mode",
        "",
        "| model | input (NHWC) | params | max |logit| | max abs diff | rel diff | argmax equal | state-dict round trip exact |",
        "|---|---|---:|---:|---:|---:|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['model']} | {tuple(r['input'])} | {r['params']:,} | {r['max_abs_logit']:.3g} | "
            f"{r['max_abs_diff']:.2e} | {r['rel_diff']:.2e} | {r['argmax_equal']} | {r['state_dict_round_trip_exact']} |"
        )
    lines += ["", f"All within {args.tol:g} relative (max |diff| / max |logit|): **{ok}**", ""]
    write_atomic(RESULTS / "torchvision_backbones.md", "\n".join(lines))
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
