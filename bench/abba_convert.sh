#!/bin/bash
# ABBA timing of convert-720p with the plain 64 px tiny model on two trees, one process per run, two runs each:
#   bash bench/abba_convert.sh OLD_TREE NEW_TREE [NEW_EXTRA]
# NEW_EXTRA is appended to the new tree's bench_convert call (", detail=1" when the new tree's bench defaults to
# a detail stage that the old tree's bench does not have). Prints "label fps {stage: ms per frame}" per run.
set -euo pipefail
old=$1 new=$2 extra=${3:-}
py=${PYTHON:-python}
run() {  # tree label extra
  for _ in 1 2; do
    PYTHONPATH=$1/src $py -c "from changeling.bench.convert_bench import bench_convert; \
r = bench_convert('720p', 'cpu', 120$3); \
print('$2', round(r['fps'], 1), {k: round(v, 1) for k, v in r['stages_ms'].items() if k in ('model', 'render', 'decode', 'write')})" \
      2>/dev/null | tail -1
  done
}
run "$old" old ""
run "$new" new "$extra"
run "$new" new "$extra"
run "$old" old ""
