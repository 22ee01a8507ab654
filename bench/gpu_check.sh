#!/usr/bin/env bash
# The device check, for a machine with an NVIDIA GPU, cupy and (for the baseline) PyTorch.
#
#   bash bench/gpu_check.sh [OUT_DIR]        # OUT_DIR defaults to $OUT, else /tmp/gpu_check
#
# From the repository root, in about 4 minutes (5 at most): the whole test suite with the GPU tests
# enabled (the GPU tests first, the rest last), the op tests again with every input on the
# GPU (pytest --device=cuda), bench/gpu_step.py (dtrain eager and CUDA-graph steps
# against PyTorch eager) and bench/gpu_dispatch.py (host µs per call). Nothing is
# installed: dtrain is put on the path through a folder of links that mirrors the package
# mapping of pyproject.toml. Logs and a short report.md go to OUT_DIR; the report ends
# with the benchmark table. The exit status is 0 only when every phase passed.
#
# Phase time limits (seconds; 70 + 45 + 85 + 20 + 75 = 295 by default, so the whole check
# ends within 5 minutes even when a phase hangs; on the H100 on 2026-11-28 the first four
# took 36, 28, 40 and 6 s (the op suite had grown to 1721 tests); the CPU suite, which CI
# runs anyway, did not finish in earlier runs: SUITE_S=1 skips it)
# can be changed with GPU_S, DEVICE_OPS_S, BENCH_S, DISPATCH_S and SUITE_S; a phase that reaches its limit
# gets SIGINT, so pytest still prints its summary and durations, and the report lists the
# tests that were still running;
# extra pytest arguments (e.g. -k ...) go in SUITE_ARGS, extra bench/gpu_step.py arguments
# (e.g. --cases gpt) in BENCH_ARGS.

set -u
root=$(cd "$(dirname "$0")/.." && pwd)
out=${1:-${OUT:-/tmp/gpu_check}}
mkdir -p "$out"
python=${PYTHON:-python3}
cd "$root" || exit 2

# dtrain without installing it: the namespace of pyproject.toml as links.
shim=$(mktemp -d /tmp/dtrain-shim.XXXXXX)
trap 'rm -rf "$shim"' EXIT
cp -r dtrain "$shim/dtrain"
ln -s "$root/runtime" "$shim/dtrain/runtime"
ln -s "$root/tensor" "$shim/dtrain/_tensor"
ln -s "$root/parallel" "$shim/dtrain/parallel"
ln -s "$root/launch" "$shim/dtrain/launch"
export PYTHONPATH="$shim${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1

report="$out/report.md"
{
  echo "# dtrain device check, $(date -u '+%Y-%m-%d %H:%M UTC')"
  echo
  echo '```'
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>&1 | head -2
  (cd "$shim" && "$python" - <<'EOF' 2>&1
import sys, numpy, cupy
print("python", sys.version.split()[0], "| numpy", numpy.__version__, "| cupy", cupy.__version__,
      "| CUDA runtime", cupy.cuda.runtime.runtimeGetVersion())
try:
    import torch
    print("torch", torch.__version__, "| cuda", torch.cuda.is_available())
except ImportError:
    print("torch: not installed")
import dtrain as dt
print("dtrain", dt.__version__, "| cuda available:", dt.cuda_is_available())
EOF
  )
  echo '```'
} >"$report"

status=0
runner=() cpu_runner=()  # extra pytest arguments, by what is installed
if "$python" -c "import xdist" 2>/dev/null; then
  runner=(-n "${WORKERS:-12}")
  # The CPU tests start up to 5 ranks each, several with tight timeouts of their own: half
  # as many workers as cores, so the cores are not oversubscribed many times over (12
  # workers did not finish in 170 s; 4 leave the slow multi-rank tests queued end to end).
  cpu_runner=(-n "${CPU_WORKERS:-8}")
  # Work stealing (xdist 3.2+): an idle worker takes queued tests from a busy one, so the
  # long multi-rank tests do not end up in one worker's queue.
  version_ok="import sys, xdist; sys.exit(tuple(map(int, xdist.__version__.split('.')[:2])) < (3, 2))"
  if "$python" -c "$version_ok" 2>/dev/null; then
    cpu_runner+=(--dist worksteal)
  fi
fi
# Where pytest-timeout is installed, a test that hangs fails by name after 60 s instead of
# holding its phase until the phase's own limit.
if "$python" -c "import pytest_timeout" 2>/dev/null; then
  runner+=(--timeout "${TEST_S:-60}")
  cpu_runner+=(--timeout "${TEST_S:-60}")
fi

unfinished() {  # the tests a -v log shows started but not finished (xdist or not)
  # A test id may hold spaces (parametrize ids), so it is cut around the status word:
  # "id PASSED [ 5%]" (plain), "[gw0] [ 5%] PASSED id" (xdist), a bare "id" (started).
  awk -v status='(PASSED|FAILED|SKIPPED|ERROR|XFAIL|XPASS)' '
    /^=+ (warnings summary|slowest|short test summary)/ { exit }  # then ids are not runs
    $0 !~ /::/ || $0 ~ ("^" status " ") { next }
    match($0, "^[[]gw[0-9]+[]] [[] *[0-9]+%[]] " status " ") {
      done[substr($0, RLENGTH + 1)] = 1; next
    }
    match($0, " " status "( |$)") { id = substr($0, 1, RSTART - 1); started[id] = done[id] = 1; next }
    { id = $0; sub(/ +$/, "", id); started[id] = 1 }
    END { for (t in started) if (!(t in done)) print t }' "$1" | sort
}

phase() {  # phase NAME SECONDS COMMAND...: run with a time limit, log, and summarise
  local name=$1 seconds=$2
  shift 2
  local start=$SECONDS
  # SIGINT, not SIGTERM: pytest then prints its summary and durations, and the tests'
  # launchers kill the ranks they started (they run in sessions of their own).
  (cd "$shim" && timeout --signal=INT --kill-after=15 "$seconds" "$@") >"$out/$name.log" 2>&1
  local rc=$?
  [ $rc -eq 0 ] || status=1
  {
    echo
    echo "## $name: exit $rc in $((SECONDS - start)) s"
    echo '```'
    # Not pytest -v's per-test lines: test names say "error" too.
    grep -E "passed|failed|skipped|error|FAILED|ERROR" "$out/$name.log" |
      grep -vE '^\[gw[0-9]+\] |^[^ ]+::[^ ]+( |$)' | tail -25
    if [ $rc -eq 124 ] || [ $rc -eq 137 ]; then
      echo "still running at the limit:"
      unfinished "$out/$name.log" | head -20
    fi
    echo '```'
  } >>"$report"
}

# pytest runs from the shim: from the repository root, its own dtrain/ (the re-exports
# alone) would shadow the shim's.
# -v: the log names each test as it starts and ends, so a phase cut short names its stragglers.
pytest=("$python" -m pytest -v -p no:cacheprovider -c "$root/pyproject.toml" --rootdir "$root")
# shellcheck disable=SC2086
phase gpu-tests "${GPU_S:-70}" "${pytest[@]}" "${runner[@]}" -m gpu ${SUITE_ARGS:-} "$root/tests"
phase device-ops "${DEVICE_OPS_S:-45}" "${pytest[@]}" "${runner[@]}" --device=cuda "$root/tests/tensor"
# shellcheck disable=SC2086
phase bench "${BENCH_S:-85}" "$python" "$root/bench/gpu_step.py" --json "$out/gpu_step.json" \
  --profile "$out/profile.txt" ${BENCH_ARGS:-}
phase dispatch "${DISPATCH_S:-20}" "$python" "$root/bench/gpu_dispatch.py" --json "$out/dispatch.json"
# shellcheck disable=SC2086
phase other-tests "${SUITE_S:-75}" "${pytest[@]}" "${cpu_runner[@]}" -m "not gpu" --durations=10 \
  ${SUITE_ARGS:-} "$root/tests"
{
  echo
  echo '```'
  sed -n '/^device:/,$p' "$out/bench.log"
  sed -n '/^## dispatch/,$p' "$out/dispatch.log"
  echo '```'
} >>"$report"
cat "$report"
exit $status
