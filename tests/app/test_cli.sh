#!/usr/bin/env bash
# Command-line acceptance of the qsens executable on the shipped conf/ tree:
# composed config (golden file from real Hydra 1.3), resolution, Hydra's error
# messages and exit status, and the multirun tree, alone and under mpirun -np 2.
# usage: test_cli.sh QSENS SOURCE_DIR [MPIEXEC]
set -u
Q=$1 SRC=$2 MPIEXEC=${3:-}
GOLDEN=$SRC/tests/app/golden
pass=0 fail=0
ok() { pass=$((pass + 1)); }
bad() { fail=$((fail + 1)); echo "FAIL: $*"; }
check() { local name=$1; shift; if "$@"; then ok; else bad "$name"; fi; }

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cd "$work"   # no conf/ here: qsens falls back to the source tree's conf/
export QSENS_DEMO_DIR=$work/demo QSENS_DATASETS=$SRC/datasets
# Spinning OpenMP threads starve each other on a shared CI machine (scripts/demo).
export OMP_WAIT_POLICY=PASSIVE
unset QSENS_DRY_RUN
# Sweeps score 8/16/24 captions (2 score batches) to keep the file fast; test_demo.sh covers the rest.
SMALL=(dataset.sizes.small=8 dataset.sizes.medium=16 dataset.sizes.large=24 autoquant.score_size=16)

# 1. the composed config, interpolations unresolved, equals real Hydra's output
"$Q" --cfg job quant_pair=wfp4_afp8 dataset.size=large >cfg.yaml 2>cfg.err
check "--cfg job matches Hydra's output" cmp -s cfg.yaml "$GOLDEN/cfg_job_wfp4_afp8_large.yaml"
check "--cfg job keeps interpolations" grep -qx '  captions_path: ${.root}/coco2017_captions_${.size}.txt' cfg.yaml

# 2. --resolve
"$Q" --cfg job --resolve quant_pair=wfp4_afp8 dataset.size=large >resolved.yaml 2>resolved.err
check "--resolve resolves captions_path" grep -qE '^  captions_path: .*/coco2017_captions_large\.txt$' resolved.yaml

# 3. Hydra's messages on stderr, exit status 2
for args in quant_pair=nope foo=1 +autoquant.method=x quant_pair=a,b; do
  name=$(printf '%s' "$args" | tr -c 'a-z0-9_' '_')
  "$Q" "$args" >out.txt 2>err.txt
  status=$?
  check "$args exits with status 2 (got $status)" test "$status" -eq 2
  sed "s#@CONF@#$SRC/conf#" "$GOLDEN/error_$name.txt" >want.txt
  check "$args prints Hydra's message" cmp -s err.txt want.txt || diff want.txt err.txt | head -10
  check "$args writes nothing" test ! -e outputs
done

# 4. a job whose inputs are wrong fails with one line naming the culprit and the rank
"$Q" model=qwen3_vl_4b_instruct model.path=$work/nowhere hydra.run.dir=bad >bad.out 2>bad.err
status=$?
check "bad model.path exits with status 1 (got $status)" test "$status" -eq 1
check "bad model.path is named" grep -qx "qsens: error: model.path '$work/nowhere' is not a directory (rank 0 on $(hostname))" bad.err
check "the failed run is recorded as failed" grep -q '"status": "failed"' bad/qsens_run.json

# 5. a sweep: jobs 0..5 in Hydra's order (last key fastest) with their .hydra files
expected_overrides() {   # job number -> overrides.yaml content
  local pairs=(wfp4_afp16 wfp4_afp16 wfp4_afp16 wfp8_afp8 wfp8_afp8 wfp8_afp8) sizes=(small medium large)
  printf -- '- quant_pair=%s\n- dataset.size=%s\n' "${pairs[$1]}" "${sizes[$(($1 % 3))]}"
  printf -- '- %s\n' "${SMALL[@]}"
}
check_sweep() {   # sweep dir
  local dir=$1 j
  check "$dir/multirun.yaml" test -s "$dir/multirun.yaml"
  for j in 0 1 2 3 4 5; do
    check "$dir/$j/.hydra/overrides.yaml" cmp -s "$dir/$j/.hydra/overrides.yaml" <(expected_overrides $j)
    check "$dir/$j/.hydra/config.yaml" test -s "$dir/$j/.hydra/config.yaml"
    check "$dir/$j hydra.yaml job.num" grep -qx "    num: $j" "$dir/$j/.hydra/hydra.yaml"
    check "$dir/$j run record" grep -q '"status": "scored"' "$dir/$j/qsens_run.json"
    check "$dir/$j log" grep -q '_autoquant_lm (.*): effective bits ' "$dir/$j/qsens.log"
  done
  check "$dir has exactly 6 jobs" test "$(find "$dir" -mindepth 1 -maxdepth 1 -type d | wc -l)" -eq 6
}
"$Q" -m quant_pair=wfp4_afp16,wfp8_afp8 dataset.size=small,medium,large "${SMALL[@]}" >sweep.out 2>sweep.err
check "sweep exits 0" test $? -eq 0
check "sweep launch line" grep -q '\[HYDRA\] Launching 6 jobs locally' sweep.out
sweep=$(ls -d multirun/*/* 2>/dev/null | head -1)
check "sweep dir is multirun/<date>/<time>" bash -c "[[ '$sweep' =~ ^multirun/[0-9]{4}-[0-9]{2}-[0-9]{2}/[0-9]{2}-[0-9]{2}-[0-9]{2}$ ]]"
[ -n "$sweep" ] && check_sweep "$sweep"

# 6. the same sweep on 2 MPI ranks gives the same tree, jobs split over ranks
if [ -n "$MPIEXEC" ]; then
  "$MPIEXEC" -np 2 "$Q" -m quant_pair=wfp4_afp16,wfp8_afp8 dataset.size=small,medium,large "${SMALL[@]}" \
    hydra.sweep.dir=mpi >mpi.out 2>mpi.err
  check "mpirun sweep exits 0" test $? -eq 0
  check_sweep mpi
  # one pass (the six cells share model and data): rank 0 runs it, rank 1 idles
  check "rank 0 ran job #1" grep -qx 'qsens: job #1 ran on rank 0' mpi.out
  check "the idle rank is reported" grep -qx 'qsens: 1 of 2 ranks have no pass to run' mpi.out
  "$MPIEXEC" -np 2 "$Q" -m dataset.size=small,huge hydra.sweep.dir=mpihuge >mpihuge.out 2>mpihuge.err
  check "a bad size fails the sweep before it runs" test $? -eq 2
  check "the failure names the job" \
    grep -qx "qsens: error: job #1: dataset.size 'huge' is not one of the sizes listed in dataset.sizes" mpihuge.err
  # two passes (different checkpoints): the second runs on rank 1 and fails there
  "$MPIEXEC" -np 2 "$Q" -m model.path=$work/demo/model,$work/nowhere model.init_preset=null "${SMALL[@]}" \
    hydra.sweep.dir=mpibad >mpibad.out 2>mpibad.err
  check "a failing job on rank 1 fails the sweep" test $? -eq 1
  check "the failure names the job and rank 1" \
    grep -q "^qsens: error: job #1: model.path '$work/nowhere' is not a directory (rank 1 on " mpibad.err
  check "the other job still ran" grep -q '"status": "scored"' mpibad/0/qsens_run.json
  for j in 0 1 2 3 4 5; do
    check "job $j config equal to the 1-rank sweep" cmp -s "mpi/$j/.hydra/config.yaml" "$sweep/$j/.hydra/config.yaml"
  done
fi

echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
