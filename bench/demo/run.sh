#!/usr/bin/env bash
# Times the demo grid end to end on this machine with the CPU backend: the 7
# (W,A) pairs x 3 sizes sweep of scripts/demo, fused into one pass. Prints the
# wall time, the tokens/s of each phase and the per-pass breakdown taken from
# the engine's progress lines. A command, not a test.
# usage: bench/demo/run.sh [BUILD_DIR] [extra qsens overrides...]
set -euo pipefail
SRC=$(cd "$(dirname "$0")/../.." && pwd)
BUILD=$(cd "${1:-$SRC/build}" && pwd); shift || true
QSENS=$BUILD/src/app/qsens
[ -x "$QSENS" ] || { echo "bench/demo: no qsens at $QSENS (build first: scripts/build)" >&2; exit 2; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
export QSENS_DEMO_DIR=$work/demo QSENS_DATASETS=$SRC/datasets
# See scripts/demo: spinning OpenMP threads starve each other on a shared machine.
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-PASSIVE}
cd "$work"
# A small run first generates the demo model and caption files, untimed.
"$QSENS" hydra.run.dir=warmup quant_pair=wfp8_afp16 >/dev/null
start=$(date +%s.%N)
"$QSENS" -m quant_pair=wfp4_afp16,wfp4_afp8,wfp8_afp16,wfp8_afp8,wint8_afp16,wint8_afp8,wint8_aint8 \
  dataset.size=small,medium,large backend=cpu hydra.sweep.dir=grid "$@" >grid.out 2>grid.err
end=$(date +%s.%N)
echo "demo grid (7 pairs x 3 sizes, CPU backend) on $(getconf _NPROCESSORS_ONLN) cores, OMP_WAIT_POLICY=$OMP_WAIT_POLICY"
awk -v wall="$(awk -v a="$start" -v b="$end" 'BEGIN { print b - a }')" '
  / batch [0-9]+\/[0-9]+: / {
    split($0, f, " "); pass = f[1] " " f[2]; phase = f[3]
    for (i = 1; i <= NF; i++) if ($(i+1) == "tokens,") tokens = $i
    for (i = 1; i <= NF; i++) if ($(i+1) == "tok/s,") rate = $i
    key = pass "|" phase; tok[key] = tokens; tps[key] = rate
    if (!(key in seen)) { seen[key] = 1; order[++n] = key }
  }
  END {
    printf "%-10s %-10s %10s %10s %9s\n", "pass", "phase", "tokens", "tok/s", "seconds"
    for (i = 1; i <= n; i++) {
      split(order[i], k, "|")
      printf "%-10s %-10s %10d %10d %9.2f\n", k[1], k[2], tok[order[i]], tps[order[i]], tok[order[i]] / tps[order[i]]
      total += tok[order[i]] / tps[order[i]]
    }
    printf "%-21s %31.2f\n", "engine total", total
    printf "%-21s %31.2f\n", "wall (end to end)", wall
  }' grid.out
