#!/usr/bin/env bash
# The whole GPU benchmark set in one call on a lent GPU machine (its image has torch, numpy, scipy, opencv,
# safetensors, tqdm, matplotlib; the rest travels as wheels in .whl/). Each case has its own time limit, so
# one slow case cannot eat the others' time. Full JSON goes to $OUT, a short table is printed last.
#   usage (device tool): bash bench/gpu_all.sh            # the default plan below, about 8 minutes
#                        CASES="train-df128:150:full extract-720p:40" bash bench/gpu_all.sh
# It first runs bench/gpu_checks.py (the CUDA-only correctness checks; CHECKS= skips them).
# A plan entry is CASE[:SECONDS[:full]]: "full" runs the case as `changeling bench` does by default (10 s
# windows, torch.compile where the trainer uses it); without it the case runs with --quick (3 s windows,
# no compile). SECONDS is the case's wall-clock limit (default 40).
set -uo pipefail
OUT=${OUT:-/tmp/bench_out}; mkdir -p "$OUT"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
  >/dev/null 2>&1 || echo "wheel install failed"
export PYTHONPATH=/tmp/site:$PWD/src PYTHONUNBUFFERED=1 GRADIO_ANALYTICS_ENABLED=False
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
python3 -c "import torch, os; print('torch', torch.__version__, torch.cuda.get_device_name(0), os.cpu_count(), 'cpus')"
[ -n "${CHECKS-1}" ] && timeout -k 5 "${CHECKS_SECONDS:-60}" python3 bench/gpu_checks.py  # CHECKS= skips them
plan=${CASES:-"train-df128:150:full extract-720p:45 decode-720p:30 convert-1080p:50 time-to-recognisable:100 train-df256:60 \
train-ddp:45 train-liae128:30 convert-720p:30 train-tiny:25"}
for entry in $plan; do
  IFS=: read -r c secs mode <<<"$entry"
  secs=${secs:-40}
  flag=--quick; [ "${mode:-}" = full ] && flag=
  echo "== $c (limit ${secs}s${flag:+, quick})"
  t0=$(date +%s)
  timeout -k 5 "$secs" python3 -m changeling bench "$c" --device cuda --repeats 1 -q $flag \
    --json-out "$OUT/$c.json" 2>&1 | tail -n 3
  echo "   took $(( $(date +%s) - t0 ))s"
done
python3 - <<'PY'
import glob, json, os
for p in sorted(glob.glob(os.path.join(os.environ.get("OUT", "/tmp/bench_out"), "*.json"))):
    for r in json.load(open(p)):
        extra = {k: r[k] for k in r.get("detail_keys", []) if k in r}
        print(f"{r['case']:<22} {r['value']:>10.1f} {r['unit']:<12} {extra}")
PY
