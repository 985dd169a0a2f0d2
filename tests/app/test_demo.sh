#!/usr/bin/env bash
# The demo sweep end to end on the CPU backend: 7 (W,A) pairs x 3 sizes fused
# into one pass, every artifact of every job, sensitivity.h5, `qsens report`
# and `qsens solve` against fresh runs, fused vs separate runs, 1 vs 2 MPI
# ranks, and the error cases. Sizes are shrunk to 8/16/24 captions and 2
# score batches so the file runs in well under a minute on 2 cores; the
# pipeline is the same at any size.
# usage: test_demo.sh QSENS SOURCE_DIR [MPIEXEC]
set -u
Q=$1 SRC=$2 MPIEXEC=${3:-}
# backend=auto must pick the CPU backend here on a GPU host too: the checks
# (memory plan lines, bit-identical reruns) are the CPU path's.
export CUDA_VISIBLE_DEVICES=
pass=0 fail=0
ok() { pass=$((pass + 1)); }
bad() { fail=$((fail + 1)); echo "FAIL: $*"; }
check() { local name=$1; shift; if "$@"; then ok; else bad "$name"; fi; }

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cd "$work"
export QSENS_DEMO_DIR=$work/demo QSENS_DATASETS=$SRC/datasets
# Spinning OpenMP threads starve each other on a shared CI machine (scripts/demo).
export OMP_WAIT_POLICY=PASSIVE
unset QSENS_DRY_RUN
SMALL=(dataset.sizes.small=8 dataset.sizes.medium=16 dataset.sizes.large=24 autoquant.score_size=16)
PAIRS=(wfp4_afp16 wfp4_afp8 wfp8_afp16 wfp8_afp8 wint8_afp16 wint8_afp8 wint8_aint8)
SIZES=(small medium large)
ARTIFACTS=(layer-sensitivity-report.md layer-sensitivity-report.json layer-sensitivity-top.svg)

valid_json() { python3 -c 'import json, sys; json.load(open(sys.argv[1]))' "$1" 2>/dev/null; }
# The files a run writes from its cell (the run record holds timings and paths, so it is left out).
cell_files() { (cd "$1" && ls ./*_autoquant_state.json ./*_quant_manifest.json "${ARTIFACTS[@]}" 2>/dev/null); }
# The report's Composed Config section is the run's own config (its output dir,
# budget and parallel mode differ between the runs compared), so it is left out.
without_config() { sed '/^## Composed Config/,$d' "$1"; }
same_cell() {   # dir_a dir_b: every cell file byte-identical
  local f files
  files=$(cell_files "$1")
  [ "$(echo "$files" | wc -l)" -eq 5 ] || return 1
  for f in $files; do
    if [ "${f#./}" = layer-sensitivity-report.md ]; then
      cmp -s <(without_config "$1/$f") <(without_config "$2/$f")
    else
      cmp -s "$1/$f" "$2/$f"
    fi || { echo "  differs: $1/$f $2/$f"; return 1; }
  done
}

# 1. the demo sweep: 21 jobs in one pass, every artifact, valid JSON, one HDF5 file with 21 runs
"$Q" -m quant_pair=$(IFS=,; echo "${PAIRS[*]}") dataset.size=small,medium,large "${SMALL[@]}" \
  hydra.sweep.dir=sweep >sweep.out 2>sweep.err
check "demo sweep exits 0" test $? -eq 0
check "21 jobs fused into one pass" grep -qx 'qsens: 21 jobs in 1 pass (the cells of a pass share one calibration and forward/backward)' sweep.out
# The pass's memory plan (the CPU default budget; planned for the pass's few hundred tokens) and its peak, once.
plan_re='\]\[qsens\]\[INFO\] - memory plan \(cpu backend\): weights [0-9.]+ GiB, fixed scratch [0-9.]+ GiB, [0-9.]+ MiB per token; token budget 4096 per step \(null: CPU default\); planned total [0-9.]+ GiB for steps of up to [0-9]+ tokens \(the pass has [0-9]+\)$'
check "the memory plan is printed once" test "$(grep -cE "$plan_re" sweep.out)" -eq 1
check "the plan is for the pass's own tokens" \
  bash -c "grep -E '$plan_re' sweep.out | grep -qE 'steps of up to ([0-9]+) tokens \\(the pass has \\1\\)'"
check "the peak memory is printed once" \
  test "$(grep -cE '\]\[qsens\]\[INFO\] - peak memory: host backend, process max RSS [0-9.]+ GiB \(planned [0-9.]+ GiB\)$' sweep.out)" -eq 1
check "a job log has the memory plan" grep -qE "$plan_re" sweep/20/qsens.log
check "the plan is also printed when the pass starts" \
  bash -c "grep -m1 -nE '^pass 1/1 (memory plan \\(cpu backend\\): |calibrate batch 1/)' sweep.out | grep -q 'memory plan'"
for j in $(seq 0 20); do
  pair=${PAIRS[$((j / 3))]} size=${SIZES[$((j % 3))]}
  for f in ${pair}_autoquant_lm_autoquant_state.json ${pair}_autoquant_lm_quant_manifest.json \
           layer-sensitivity-report.json qsens_run.json; do
    check "sweep/$j/$f is valid JSON" valid_json "sweep/$j/$f"
  done
  for f in layer-sensitivity-report.md layer-sensitivity-top.svg; do check "sweep/$j/$f" test -s "sweep/$j/$f"; done
  check "sweep/$j record says scored" grep -q '"status": "scored"' "sweep/$j/qsens_run.json"
  check "sweep/$j manifest names its size" grep -q "\"size\": \"$size\"" "sweep/$j/${pair}_autoquant_lm_quant_manifest.json"
  if [ "$pair" = wint8_afp8 ]; then
    check "sweep/$j report says no deployment kernel exists" grep -q '^- Deployment: no deployment kernel exists' "sweep/$j/layer-sensitivity-report.md"
  else
    check "sweep/$j report has no deployment caveat" bash -c "! grep -q '^- Deployment:' sweep/$j/layer-sensitivity-report.md"
  fi
  check "sweep/$j log has the summary" grep -q "\]\[qsens\]\[INFO\] - ${pair}_autoquant_lm ($size): effective bits " "sweep/$j/qsens.log"
done
check "sensitivity.h5 holds 21 runs" test "$(h5ls sweep/sensitivity.h5/runs 2>/dev/null | wc -l)" -eq 21
check "sensitivity.h5 run 20 is wint8_aint8 large" \
  bash -c "h5dump -a /runs/20/pair -a /runs/20/dataset_size sweep/sensitivity.h5 | grep -q '\"wint8_aint8\"' &&
           h5dump -a /runs/20/dataset_size sweep/sensitivity.h5 | grep -q '\"large\"'"
check "sensitivity.h5 run 7 has 28 linears" bash -c "h5ls sweep/sensitivity.h5/runs/7/linears | grep -q '{28/Inf}'"
check "the sweep prints where sensitivity.h5 is" grep -qx "qsens: 21 runs in $work/sweep/sensitivity.h5" sweep.out

# 2. qsens report regenerates every report byte-identically
cp -r sweep rebuilt
for j in $(seq 0 20); do rm -f rebuilt/$j/*_quant_manifest.json "${ARTIFACTS[@]/#/rebuilt/$j/}"; done
"$Q" report rebuilt >report.out 2>&1
check "qsens report exits 0" test $? -eq 0
for j in $(seq 0 20); do check "report of job $j byte-identical" same_cell sweep/$j rebuilt/$j; done

# 3. qsens solve at a new budget equals a fresh run at that budget (wfp4_afp8 medium: 4-bit choices)
cp -r sweep/4 solved
"$Q" solve solved autoquant.effective_bits=6 >solve.out 2>&1
check "qsens solve exits 0" test $? -eq 0
"$Q" quant_pair=wfp4_afp8 dataset.size=medium "${SMALL[@]}" autoquant.effective_bits=6 hydra.run.dir=fresh6 \
  >fresh6.out 2>&1
check "fresh run at 6 bits exits 0" test $? -eq 0
check "solve at 6 bits equals a fresh run at 6 bits" same_cell solved fresh6
check "the 6-bit recipe differs from the 8-bit one" \
  bash -c "! cmp -s solved/wfp4_afp8_autoquant_lm_quant_manifest.json sweep/4/wfp4_afp8_autoquant_lm_quant_manifest.json"

# 4. fused cells equal separate runs, bit for bit
"$Q" -m quant_pair=wint8_aint8,wfp8_afp16 dataset.size=medium "${SMALL[@]}" hydra.sweep.dir=fused >fused.out 2>&1
check "2-pair sweep exits 0" test $? -eq 0
for p in wint8_aint8 wfp8_afp16; do
  "$Q" quant_pair=$p dataset.size=medium "${SMALL[@]}" hydra.run.dir=alone_$p >alone_$p.out 2>&1
  check "separate $p run exits 0" test $? -eq 0
done
check "fused wint8_aint8 equals its separate run" same_cell fused/0 alone_wint8_aint8
check "fused wfp8_afp16 equals its separate run" same_cell fused/1 alone_wfp8_afp16
check "the 21-cell pass equals the separate run" same_cell sweep/19 alone_wint8_aint8
# A set step budget smaller than a logical batch: each batch runs alone, and the log says where it came from.
"$Q" quant_pair=wint8_aint8 dataset.size=medium "${SMALL[@]}" backend.token_budget=64 hydra.run.dir=budget64 \
  >budget64.out 2>&1
check "a run with backend.token_budget=64 exits 0" test $? -eq 0
check "its plan names the set budget" \
  grep -qE 'memory plan \(cpu backend\): .*; token budget 64 per step \(backend.token_budget\); planned total [0-9.]+ GiB for steps of up to 64 tokens' budget64.out

# 5. two MPI ranks (two passes: delta_precision splits them) give the same artifacts as one.
# The CPU GEMM (OpenBLAS) sums in an order that depends on its thread count and
# mpirun binds each rank to one core, so both runs pin backend.threads=1; they
# pin backend=cpu too, so that a GPU host checks the same thing as CI.
if [ -n "$MPIEXEC" ]; then
  two_pass=(-m quant_pair=wint8_aint8,wfp4_afp8 autoquant.delta_precision=accurate,modelopt "${SMALL[@]}"
            backend=cpu backend.threads=1)
  "$Q" "${two_pass[@]}" hydra.sweep.dir=one_rank >one.out 2>&1
  check "1-rank two-pass sweep exits 0" test $? -eq 0
  "$MPIEXEC" -np 2 "$Q" "${two_pass[@]}" hydra.sweep.dir=two_ranks >two.out 2>&1
  check "2-rank two-pass sweep exits 0" test $? -eq 0
  check "the sweep has two passes" grep -q '^qsens: 4 jobs in 2 passes' two.out
  check "rank 1 ran a pass" grep -qx 'qsens: job #1 ran on rank 1' two.out
  for j in 0 1 2 3; do check "job $j equal on 1 and 2 ranks" same_cell one_rank/$j two_ranks/$j; done
  check "sensitivity.h5 on 2 ranks holds 4 runs" test "$(h5ls two_ranks/sensitivity.h5/runs | wc -l)" -eq 4
  # layers mode: both ranks run both passes, each scoring half the layers; the sums at rank 0
  # equal a lone run exactly (a doubled or missing slice would show in every score)
  "$MPIEXEC" -np 2 "$Q" "${two_pass[@]}" parallel=layers hydra.sweep.dir=layers >layers.out 2>&1
  check "2-rank layers sweep exits 0" test $? -eq 0
  check "layers mode says so" grep -qx 'qsens: parallel.mode=layers: every rank runs every pass, scoring 1/2 of the layers' layers.out
  for j in 0 1 2 3; do check "job $j equal in layers mode" same_cell one_rank/$j layers/$j; done
  check "raw scores on 2 ranks bit-identical" \
    bash -c "cmp -s <(h5dump -d /runs/1/linear_raw_scores one_rank/sensitivity.h5 | tail -n +2) \
                    <(h5dump -d /runs/1/linear_raw_scores two_ranks/sensitivity.h5 | tail -n +2)"
fi

# 6. errors: one line naming the key, status 2
expect_error() {   # name, expected status, expected line (regex), qsens arguments...
  local name=$1 want=$2 line=$3; shift 3
  "$Q" "$@" >err.out 2>err.txt
  local status=$?
  check "$name exits with status $want (got $status)" test "$status" -eq "$want"
  check "$name prints one line" test "$(wc -l <err.txt)" -eq 1
  check "$name names the culprit" grep -qE "$line" err.txt || cat err.txt
}
expect_error "infeasible budget" 2 \
  "^qsens: error: config key 'autoquant.effective_bits': effective_bits 4.0 is infeasible" \
  quant_pair=wint8_aint8 autoquant.effective_bits=4 "${SMALL[@]}" hydra.run.dir=infeasible
check "the infeasible run is recorded as failed" grep -q '"status": "failed"' infeasible/qsens_run.json
mkdir -p extra/quant_pair
printf 'name: wint3_afp8\nweight_format: int3\nact_format: fp8\nact_amax: static\nmodelopt_config: null\ndisplay_name: null\nexperimental: true\n' \
  >extra/quant_pair/wint3_afp8.yaml
expect_error "unknown format in a pair file" 2 \
  "^qsens: error: config key 'quant_pair.weight_format': unknown number format 'int3'" \
  -cd extra quant_pair=wint3_afp8 hydra.run.dir=int3
# The padded parity mode (left-padded rows of calib_seq_len, pad-context target) runs end to end.
"$Q" quant_pair=wint8_aint8 "${SMALL[@]}" dataset.padding=max_length dataset.calib_seq_len=40 \
  hydra.run.dir=padded >padded.out 2>&1
check "a padded run finishes" grep -q '"status": "scored"' padded/qsens_run.json
check "a padded run records its row length" grep -q '"seq_len": 40' padded/wint8_aint8_autoquant_lm_autoquant_state.json
# The CPU backend's bf16 mode (the GPU's numerics) runs end to end and says so.
"$Q" quant_pair=wint8_aint8 dataset.size=medium "${SMALL[@]}" backend=cpu_bf16 hydra.run.dir=cpu_bf16 \
  >cpu_bf16.out 2>&1
check "a backend=cpu_bf16 run finishes" grep -q '"status": "scored"' cpu_bf16/qsens_run.json
check "it records bf16 gradients" grep -q '"grad_dtype": "bfloat16"' cpu_bf16/wint8_aint8_autoquant_lm_autoquant_state.json
check "the cpu backend records f32 ones" grep -q '"grad_dtype": "float32"' alone_wint8_aint8/wint8_aint8_autoquant_lm_autoquant_state.json
check "its plan names the backend" \
  grep -qE 'memory plan \(cpu_bf16 backend\): .*; token budget 4096 per step \(null: CPU default\)' cpu_bf16.out
expect_error "a bad backend" 2 "^qsens: error: config key 'backend.name': 'tpu' is not one of: auto, cpu, cuda, cpu_bf16$" \
  backend.name=tpu hydra.run.dir=tpu

# Wrong values through the command line (test_job_settings mutates every key): one line naming
# the key, status 2, nothing run.
for kv in autoquant.effective_bits=abc dataset.batch_size=0 quant_pair.act_amax=sometimes backend.threads=x \
          backend.token_budget=0 backend.token_budget=many; do
  key=${kv%%=*}
  "$Q" "$kv" hydra.run.dir=bad_value >bad.out 2>bad.err
  status=$?
  check "$kv exits with status 2 (got $status)" test "$status" -eq 2
  check "$kv prints one line naming $key" bash -c "[ \$(wc -l <bad.err) -eq 1 ] && grep -qF \"'$key'\" bad.err" ||
    cat bad.err
done
check "bad values ran nothing" test ! -e bad_value/qsens_run.json

# 7. qsens formats: the registry and every pair file of conf/quant_pair
"$Q" formats >formats.out 2>formats.err
check "qsens formats exits 0" test $? -eq 0
check "formats lists mxfp4 with its 32-element block" grep -qE '^  mxfp4 +4 +32 ' formats.out
check "formats lists the 19 pairs" test "$(grep -cE '^  w[a-z0-9]+_a[a-z0-9]+ ' formats.out)" -eq 19
check "wint8_aint8 is INT8_DEFAULT_CFG, 8 bits, static, runs on cpu" \
  grep -qE '^  wint8_aint8 +INT8_DEFAULT_CFG +8\.0  static +cpu' formats.out
check "wfp4_afp8 activations are dynamic" grep -qE '^  wfp4_afp8 +W4A8_MXFP4_FP8_CFG +4\.0  dynamic ' formats.out
check "wint8_afp8 says no deployment kernel exists" \
  bash -c "grep -A1 -E '^  wint8_afp8 ' formats.out | grep -q 'no deployment kernel exists'"
"$Q" formats --config-dir extra >formats_bad.out 2>formats_bad.err
check "formats on a bad pair file exits 2" test $? -eq 2
check "formats names the bad pair file" grep -q "extra/quant_pair/wint3_afp8.yaml: .*unknown number format 'int3'" formats_bad.err

echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
