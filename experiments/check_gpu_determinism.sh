#!/usr/bin/env bash
# Is a GPU run bitwise reproducible? Two 6-epoch runs of fashion_mnist_vgg5 (default head, seed 0) with XLA's
# defaults, then two with --xla_gpu_deterministic_ops=true (what `spinal-jax train --deterministic` sets), each
# with no compilation cache (as on two fresh machines); prints, per epoch, whether the two runs' train and test
# losses are equal. Writes $OUT/{gpu.txt,walls.txt,same.txt,<variant>-<a|b>/{metrics.jsonl,summary.json}}.
# Usage (repository root, Fashion-MNIST prepared under $TFDS_DATA_DIR): OUT=/tmp/det_out bash experiments/check_gpu_determinism.sh
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD SPINAL_JAX_COMPILATION_CACHE=0
: "${OUT:?set OUT to an output directory}"
mkdir -p /tmp/det "$OUT"; date -u; nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | tee "$OUT/gpu.txt"
TRAIN=(python -c 'import sys; from spinal_jax.cli import main; sys.argv[0]="spinal-jax"; sys.exit(main())' train)
for v in default det; do
  case $v in default) f="";; det) f="--xla_gpu_deterministic_ops=true";; esac
  for r in a b; do
    t0=$(date +%s.%N)
    XLA_FLAGS="$f" timeout 90 "${TRAIN[@]}" --config fashion_mnist_vgg5 --workdir /tmp/det/$v-$r --config.epochs=6 --config.protocol=paper > /tmp/det/$v-$r.log 2>&1; rc=$?
    echo "$v $r rc=$rc wall=$(python -c "print(round($(date +%s.%N)-$t0,1))")" | tee -a "$OUT/walls.txt"
    mkdir -p "$OUT/$v-$r"; cp /tmp/det/$v-$r/metrics.jsonl /tmp/det/$v-$r/summary.json "$OUT/$v-$r/" 2>/dev/null; tail -3 /tmp/det/$v-$r.log
  done
  python - $v <<'PY'
import json, os, sys
v = sys.argv[1]
rows = [[json.loads(line) for line in open(f"/tmp/det/{v}-{r}/metrics.jsonl")] for r in "ab"]
for a, b in zip(*rows):
    print(v, a["epoch"], a["train_loss"] == b["train_loss"], a["test_loss"] == b["test_loss"], a["train_loss"], b["train_loss"], a["seconds"], b["seconds"])
same = all(a["train_loss"] == b["train_loss"] and a["test_loss"] == b["test_loss"] for a, b in zip(*rows))
print(v, "same" if same else "differ", file=open(os.path.join(os.environ["OUT"], "same.txt"), "a"))
PY
done
date -u
