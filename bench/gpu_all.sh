#!/usr/bin/env bash
# The whole GPU benchmark set in one call on a lent GPU machine (its image has torch, numpy, scipy, opencv,
# safetensors, tqdm, matplotlib; the rest travels as wheels in .whl/). Each case has its own time limit, so
# one slow case cannot eat the others' time. Full JSON goes to $OUT, a short table is printed last.
#   usage (device tool): bash bench/gpu_all.sh [SECONDS_PER_CASE]
set -uo pipefail
per_case=${1:-40}
OUT=${OUT:-/tmp/bench_out}; mkdir -p "$OUT"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
  >/dev/null 2>&1 || echo "wheel install failed"
export PYTHONPATH=/tmp/site:$PWD/src PYTHONUNBUFFERED=1 GRADIO_ANALYTICS_ENABLED=False
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
python3 -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name(0))"
cases=${CASES:-"train-df128 train-tiny extract-720p convert-1080p train-df256 train-original"}
quick=${QUICK:---quick}
for c in $cases; do
  echo "== $c"
  timeout "$per_case" python3 -m changeling bench "$c" --device cuda --repeats 1 -q $quick \
    --json-out "$OUT/$c.json" 2>&1 | tail -n 3
done
python3 - <<'PY'
import glob, json, os
rows = []
for p in sorted(glob.glob(os.path.join(os.environ.get("OUT", "/tmp/bench_out"), "*.json"))):
    for r in json.load(open(p)):
        rows.append(r)
        extra = {k: r[k] for k in r.get("detail_keys", []) if k in r}
        print(f"{r['case']:<22} {r['value']:>10.1f} {r['unit']:<12} {extra}")
PY
