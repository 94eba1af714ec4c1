#!/usr/bin/env bash
# gpu_check.sh: everything in this project that needs a GPU, in one run of under 8 minutes.
#
#   bash benchmarks/gpu_check.sh [--out DIR] [--wheels DIR] [--data PATH] [--device cuda]
#                                [--quick] [--dry-run]
#
# For a GPU machine lent now and then, with no network: Python 3 with CuPy, PyTorch (CUDA),
# NumPy, pytest, hypothesis (and matplotlib, tqdm), but not this project's other
# dependencies. Nothing is installed into site-packages: the repository is put on
# PYTHONPATH, and the wheels given with --wheels go into a temporary folder put before it
# (unpacked with python3 -m zipfile where pip fails: they are pure Python).
# Fill that folder once, on a machine that reaches the package index (pure-Python wheels,
# for Python 3.12 on manylinux x86_64):
#
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux2014_x86_64 -d wheels array-api-compat==1.16.0 array-api-strict==2.6.1 threadpoolctl==3.8.0
#
# Steps, each under `timeout` with its own budget in seconds (a global deadline caps them
# so the whole run ends within LIMIT_S even when a step hangs; a failing step is recorded
# and the run goes on):
#   wheels 15     python3 -m pip install -q --no-index --no-deps --no-compile --target TMP/site DIR/*.whl
#   machine 15    python3 benchmarks/gpu_check.py machine      (nvidia-smi, CuPy, CUDA, torch)
#   doctor 20     python3 -m scratchae doctor
#   tests_core 70 HYPOTHESIS_PROFILE=dev python3 -m pytest -m gpu ... --junitxml OUT/gpu_tests_core.xml
#                 tests/test_backend.py tests/test_fast.py tests/test_devices.py tests/test_doctor.py
#                 (the CuPy-only lines against their twins, docs/cuda.md; CPU/GPU parity)
#   parity 80     python3 benchmarks/gpu_check.py parity       (CPU vs GPU, checkpoints, --resume)
#   speed 110     python3 benchmarks/gpu_check.py speed        (bench_vae.py: scratchae vs torch.cuda)
#   iwae 75       python3 benchmarks/gpu_check.py iwae         (IWAE-5000 on the whole test set)
#   tests 75      HYPOTHESIS_PROFILE=dev python3 -m pytest -m gpu -q -p no:cacheprovider --junitxml OUT/gpu_tests.xml
#                 (every other gpu-marked test: the files of tests_core left out)
#   summarize 10  python3 benchmarks/gpu_check.py summarize    (OUT/summary.json, OUT/summary.md)
#
# --out DIR      where everything goes (default gpu_check_out): summary.md (a table to paste
#                into docs/results.md), summary.json, steps.tsv, logs/, one JSON per step
# --data PATH    MNIST .npz for the speed and IWAE steps (copy it into the tree: shared/ does
#                not travel); without it the subset bundled with scratchae is used, and the
#                summary says so. Parity always uses the bundled subset.
# --device DEV   cuda (default), cuda:N, or array_api_strict:device1: the project's no-GPU
#                stand-in, which runs the same pipeline on the CPU (no GPU detection, no
#                memory figures, the speed step on --device cpu) and implies --quick
# --quick        small sizes: 1,000 images per parity run, 1 speed repeat, IWAE k = 50
# --dry-run      print each step, its budget and its command; run nothing; exit 0
#
# Exit status: 0 every step passed; 1 some step failed, timed out or was skipped; 2 bad
# arguments, or no CUDA GPU visible (one line on stderr).
set -uo pipefail

LIMIT_S=470          # the whole run, summary included, ends within this (< 480 s)
KILL_GRACE_S=3       # after the budget: SIGINT, then SIGKILL this much later
SUMMARY_RESERVE_S=12 # kept back for summarize by every step before it

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PY=${PYTHON:-python3}
OUT=gpu_check_out
WHEELS=""
DATA=""
DEVICE=cuda
DRY=0
QUICK=0

usage() { awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "${BASH_SOURCE[0]}"; }
die_usage() { echo "gpu_check.sh: $1 (see --help)" >&2; exit 2; }

while (( $# )); do
    case $1 in
        --out) (( $# >= 2 )) || die_usage "--out needs a folder"; OUT=$2; shift 2 ;;
        --out=*) OUT=${1#*=}; shift ;;
        --wheels) (( $# >= 2 )) || die_usage "--wheels needs a folder"; WHEELS=$2; shift 2 ;;
        --wheels=*) WHEELS=${1#*=}; shift ;;
        --data) (( $# >= 2 )) || die_usage "--data needs a path"; DATA=$2; shift 2 ;;
        --data=*) DATA=${1#*=}; shift ;;
        --device) (( $# >= 2 )) || die_usage "--device needs a name"; DEVICE=$2; shift 2 ;;
        --device=*) DEVICE=${1#*=}; shift ;;
        --quick) QUICK=1; shift ;;
        --dry-run) DRY=1; shift ;;
        -h|--help) usage; exit 0 ;;
        *) die_usage "unknown argument '$1'" ;;
    esac
done

abspath() {
    realpath -m -- "$1" 2>/dev/null && return 0
    case $1 in /*) printf '%s\n' "$1" ;; *) printf '%s\n' "$PWD/$1" ;; esac
}
OUT=$(abspath "$OUT")
[[ -n $WHEELS ]] && WHEELS=$(abspath "$WHEELS")
[[ -n $DATA ]] && DATA=$(abspath "$DATA")

GPU=0
case $DEVICE in
    cuda|cuda:*) GPU=1 ;;
    *) QUICK=1 ;;
esac

# --- is there a GPU? ------------------------------------------------------------------------
DETECT=(env "PYTHONPATH=$REPO${PYTHONPATH:+:$PYTHONPATH}" "$PY" -c
        "import cupy, sys; sys.exit(0 if cupy.is_available() else 1)")
NO_GPU_LINE="gpu_check.sh: no CUDA GPU is visible (CuPy is missing or cupy.is_available() is False): nothing run; --dry-run shows the plan, --device array_api_strict:device1 runs it on the no-GPU stand-in"
if (( GPU )); then
    if "${DETECT[@]}" >/dev/null 2>&1; then HAVE_GPU=1; else HAVE_GPU=0; fi
    if (( ! HAVE_GPU && ! DRY )); then
        echo "$NO_GPU_LINE" >&2
        exit 2
    fi
fi

# --- the plan -------------------------------------------------------------------------------
if (( DRY )); then
    TMP=${TMPDIR:-/tmp}/gpu_check.XXXXXX
else
    mkdir -p "$OUT/logs" || die_usage "cannot create --out $OUT"
    TMP=$(mktemp -d "${TMPDIR:-/tmp}/gpu_check.XXXXXX") || die_usage "mktemp failed"
    trap 'rm -rf "$TMP"' EXIT
fi
SITE=$TMP/site
if [[ -n $WHEELS ]]; then
    export PYTHONPATH="$SITE:$REPO${PYTHONPATH:+:$PYTHONPATH}"
else
    export PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}"
fi
export MPLBACKEND=Agg
cd "$REPO" || exit 2

COMMON=(--out "$OUT" --device "$DEVICE")
(( QUICK )) && COMMON+=(--quick)
DATA_OPT=()
[[ -n $DATA ]] && DATA_OPT=(--data "$DATA")
GC=(benchmarks/gpu_check.py)
CORE_TESTS=(tests/test_backend.py tests/test_fast.py tests/test_devices.py tests/test_doctor.py)
IGNORE_CORE=()
for f in "${CORE_TESTS[@]}"; do IGNORE_CORE+=("--ignore=$f"); done

now_us() { local t=${EPOCHREALTIME//[!0-9]/}; printf '%s\n' "$(( 10#$t ))"; }
START_US=$(now_us)
elapsed_s() { printf '%s\n' "$(( ($(now_us) - START_US) / 1000000 ))"; }
quote() { local out="" a; for a in "$@"; do out+="$(printf '%q' "$a") "; done; printf '%s\n' "${out% }"; }

STEP_NAMES=(wheels machine doctor tests_core parity speed iwae tests summarize)
NSTEPS=${#STEP_NAMES[@]}
STEP_NO=0
FAILED=0
TOTAL_BUDGET=0

if (( DRY )); then
    echo "gpu_check.sh --dry-run: the plan (nothing is run)"
    echo "  repository: $REPO (on PYTHONPATH; nothing installed into site-packages)"
    echo "  out: $OUT   device: $DEVICE   quick: $QUICK   data: ${DATA:-the bundled MNIST subset (no --data)}"
    if (( GPU )); then
        if (( HAVE_GPU )); then echo "  GPU: visible (cupy.is_available() is True)"
        else echo "  GPU: not visible (CuPy missing or cupy.is_available() is False): without --dry-run this exits 2"; fi
    else
        echo "  GPU: not needed (stand-in device $DEVICE; implies --quick)"
    fi
    echo "  each step: timeout -s INT -k $KILL_GRACE_S BUDGET; the whole run ends within $LIMIT_S s"
else
    printf 'name\tstatus\trc\tseconds\tbudget\tcommand\n' >"$OUT/steps.tsv"
    echo "gpu_check.sh: device $DEVICE, out $OUT, data ${DATA:-the bundled MNIST subset (no --data)}$( (( QUICK )) && printf ', quick sizes')"
fi

record() {  # name status rc seconds budget command
    printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$@" >>"$OUT/steps.tsv"
}

# run_step NAME BUDGET CMD...: CMD under timeout, output in OUT/logs/NAME.log
run_step() {
    local name=$1 budget=$2; shift 2
    local reserve=$SUMMARY_RESERVE_S left eff cmdline t0 rc secs status
    STEP_NO=$(( STEP_NO + 1 ))
    [[ $name == summarize ]] && reserve=0
    cmdline=$(quote "$@")
    if (( DRY )); then
        TOTAL_BUDGET=$(( TOTAL_BUDGET + budget ))
        printf '  [%d/%d] %-9s %4d s  %s\n' "$STEP_NO" "$NSTEPS" "$name" "$budget" "$cmdline"
        return 0
    fi
    left=$(( LIMIT_S - $(elapsed_s) - KILL_GRACE_S - reserve ))
    eff=$(( budget < left ? budget : left ))
    if (( eff < 5 )); then
        printf '[%d/%d] %s: SKIPPED, %d s of the run left\n' "$STEP_NO" "$NSTEPS" "$name" "$(( LIMIT_S - $(elapsed_s) ))"
        record "$name" "skipped (no time left)" "" 0 "$budget" "$cmdline"
        FAILED=1
        return 0
    fi
    printf '[%d/%d] %s (budget %d s): %s\n' "$STEP_NO" "$NSTEPS" "$name" "$eff" "$cmdline"
    t0=$(now_us)
    GPU_CHECK_BUDGET_S=$(( eff - 2 )) timeout -s INT -k "$KILL_GRACE_S" "$eff" "$@" >"$OUT/logs/$name.log" 2>&1
    rc=$?
    secs=$(( ($(now_us) - t0) / 100000 ))
    secs="$(( secs / 10 )).$(( secs % 10 ))"
    case $rc in
        0) status=ok ;;
        124|137) status="TIMEOUT after $eff s" ;;
        *) status="FAILED (rc $rc)" ;;
    esac
    (( rc == 0 )) || FAILED=1
    record "$name" "$status" "$rc" "$secs" "$eff" "$cmdline"
    printf '      %s in %s s' "$status" "$secs"
    if (( rc != 0 )); then
        printf ', last lines of %s:\n' "$OUT/logs/$name.log"
        tail -n 3 "$OUT/logs/$name.log" | sed 's/^/        /'
    else
        printf '\n'
    fi
}

# --- the steps ------------------------------------------------------------------------------
if [[ -n $WHEELS ]]; then
    run_step wheels 15 "$PY" -m pip install -q --no-index --no-deps --no-compile --target "$SITE" "$WHEELS"/*.whl
    if (( ! DRY )) && [[ ! -d $SITE ]]; then
        # no pip here? pure-Python wheels are zip files: unpacking them is an install too
        echo "      pip did not install the wheels: unpacking them into $SITE with python3 -m zipfile"
        for whl in "$WHEELS"/*.whl; do
            [[ -f $whl ]] && "$PY" -m zipfile -e "$whl" "$SITE" >>"$OUT/logs/wheels.log" 2>&1
        done
    fi
elif (( DRY )); then
    STEP_NO=$(( STEP_NO + 1 ))
    printf '  [%d/%d] %-9s %4d s  %s\n' "$STEP_NO" "$NSTEPS" wheels 0 "(only with --wheels DIR: $PY -m pip install -q --no-index --no-deps --no-compile --target TMP/site DIR/*.whl)"
else
    STEP_NO=$(( STEP_NO + 1 ))
    printf '[%d/%d] wheels: skipped (no --wheels)\n' "$STEP_NO" "$NSTEPS"
    record wheels "skipped (no --wheels)" "" 0 0 ""
fi
run_step machine 15 "$PY" "${GC[@]}" machine "${COMMON[@]}"
run_step doctor 20 "$PY" -m scratchae doctor
# first the CuPy-only lines against their twins (docs/cuda.md) and CPU/GPU parity
run_step tests_core 70 env HYPOTHESIS_PROFILE=dev "$PY" -m pytest -m gpu -q -p no:cacheprovider \
    --junitxml "$OUT/gpu_tests_core.xml" "${CORE_TESTS[@]}"
run_step parity 80 "$PY" "${GC[@]}" parity "${COMMON[@]}"
run_step speed 110 "$PY" "${GC[@]}" speed "${COMMON[@]}" "${DATA_OPT[@]}"
run_step iwae 75 "$PY" "${GC[@]}" iwae "${COMMON[@]}" "${DATA_OPT[@]}"
# last, with what is left: every other gpu-marked test
run_step tests 75 env HYPOTHESIS_PROFILE=dev "$PY" -m pytest -m gpu -q -p no:cacheprovider --durations=5 \
    --junitxml "$OUT/gpu_tests.xml" "${IGNORE_CORE[@]}" tests
run_step summarize 10 "$PY" "${GC[@]}" summarize --out "$OUT"

if (( DRY )); then
    echo "  budgets add up to $TOTAL_BUDGET s (capped at $LIMIT_S s in all)"
    echo "  writes: $OUT/summary.md, summary.json, steps.tsv, gpu_tests.xml, machine.json, parity.json, speed.json, iwae.json, logs/"
    exit 0
fi

echo
if [[ -f $OUT/summary.md ]]; then
    cat "$OUT/summary.md"
else
    echo "gpu_check.sh: no summary.md (the summarize step failed: $OUT/logs/summarize.log)"
fi
echo "gpu_check.sh: $(( $(elapsed_s) )) s in all; results in $OUT"
exit "$FAILED"
