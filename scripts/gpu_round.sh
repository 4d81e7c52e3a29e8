#!/usr/bin/env bash
# One whole GPU round on the GPU machine (no network): install carried wheels from .deps/, build
# for the local GPU, run the C++ and Python test tiers and the benchmark, and leave logs and results
# JSON in the output folder (first argument, default $OUT, else ./gpu_round_out).
#   bash scripts/gpu_round.sh [OUT_DIR] [--tests "pytest args"] [--bench "bench args"] [--no-bench]
#                             [--test-seconds N]
# --test-seconds N: tests that would start more than N s after pytest starts are reported as skipped
# (FLASH_ATTN_TEST_DEADLINE, tests/python/conftest.py), so a lease-capped command still gets its counts.
# The sha for the results JSON comes from FLASH_ATTN_COMMIT (the GPU machine's copy has no .git).
set -uo pipefail
cd "$(dirname "$0")/.."
out=${1:-${OUT:-gpu_round_out}}; shift || true
pytest_args="tests/python"; bench_args="--grid training --quick"; run_bench=1; test_seconds=0
while [ $# -gt 0 ]; do
  case "$1" in
    --tests) pytest_args="$2"; shift 2 ;;
    --bench) bench_args="$2"; shift 2 ;;
    --no-bench) run_bench=0; shift ;;
    --test-seconds) test_seconds="$2"; shift 2 ;;
    *) echo "unknown argument $1"; exit 2 ;;
  esac
done
mkdir -p "$out"
export PYTHONUNBUFFERED=1
if ls .deps/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/flash_deps .deps/*.whl
  export PYTHONPATH=/tmp/flash_deps${PYTHONPATH:+:$PYTHONPATH}
fi
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.mem --format=csv | tee "$out/gpu.txt"
python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda)" | tee -a "$out/gpu.txt"

start=$(date +%s)
FLASH_ATTN_JOBS=${FLASH_ATTN_JOBS:-$(nproc)} bash scripts/build.sh > "$out/build.log" 2>&1
build_rc=$?
echo "build rc=$build_rc in $(( $(date +%s) - start )) s" | tee -a "$out/summary.txt"
grep -E "error|warning: Registers|spill" "$out/build.log" | head -50
[ $build_rc -eq 0 ] || { tail -60 "$out/build.log"; exit 1; }

ctest --test-dir "${FLASH_ATTN_BUILD_DIR:-build/dev}" -j 8 > "$out/ctest.log" 2>&1
echo "ctest rc=$? $(grep -E 'tests passed|tests failed' "$out/ctest.log")" | tee -a "$out/summary.txt"

export PYTHONPATH="$PWD:${PYTHONPATH:-}"
# pytest-xdist, when installed, spreads the cases over processes sharing the GPU. Not more than 8:
# some GPU test files keep ~5-10 GB of inputs per worker, and 14 workers ran an 80 GB H100 out of memory.
xdist=""; python3 -c "import xdist" 2>/dev/null && xdist="-n 8"
[ "$test_seconds" -gt 0 ] && export FLASH_ATTN_TEST_DEADLINE=$(( $(date +%s) + test_seconds ))
python3 -m pytest -q -p no:cacheprovider -rf $xdist --junitxml="$out/pytest.xml" $pytest_args > "$out/pytest.log" 2>&1
echo "pytest rc=$? $(tail -1 "$out/pytest.log")" | tee -a "$out/summary.txt"
grep -E "^FAILED|^ERROR" "$out/pytest.log" | head -40

if [ $run_bench = 1 ]; then
  python3 benchmarks/bench_attention.py $bench_args --out "$out/h100-attention.json" > "$out/bench.log" 2>&1
  echo "bench rc=$?" | tee -a "$out/summary.txt"
  python3 benchmarks/bench_attention.py --grid decode --out "$out/h100-decode.json" > "$out/bench_decode.log" 2>&1
  echo "decode bench rc=$?" | tee -a "$out/summary.txt"
  python3 benchmarks/bench_rotary.py --out "$out/h100-rotary.json" > "$out/bench_rotary.log" 2>&1
  echo "rotary bench rc=$?" | tee -a "$out/summary.txt"
  tail -n 25 "$out/bench.log" "$out/bench_decode.log" "$out/bench_rotary.log"
fi
# The GPU machine returns at most 8 files: keep JSON + summary, pack the logs into one archive.
(cd "$out" && tar czf logs.tgz *.log *.xml gpu.txt 2>/dev/null && rm -f *.log *.xml gpu.txt)
cat "$out/summary.txt"
