#!/usr/bin/env bash
# Everything a lent GPU has to check for issues 4-8, in stages a session can fit into its device calls
# (10 minutes a call, 15 or 30 minutes in all, 64 MiB carried per call).
#
#   bash benchmarks/gpu_session.sh STAGE [STAGE ...]
#
# Stages, in the order a session runs them:
#   pack     HERE, before the first call: split $SRC's CIFAR-10 (default data/, as data_prep writes it) and the
#            DivideMix noise files (data_prep/make_noise.py --out data/noise_labels/dividemix_json/cifar10/0.50.json)
#            into three ignored chunks (.gpu_data/c1 .. c3, <= 48 MiB each), one to carry per call.
#   build    pip install -e . for sm_90 (MAX_JOBS=16), then python -m lnl.info.
#   selftest python -m lnl.selftest (every kernel vs its reference, then timings against the baselines):
#            first, so a wrong kernel shows before anything trains; selftest.json comes back.
#   test     the CUDA tests (pytest -m cuda) with a junit file; then the CPU suite of tests/ops.
#   bench    bench_knn, bench_gmm and bench_plr on the GPU, each with --record.
#   unpack   (needs c1..c3 carried) reassemble and check the chunks into .gpu_data/data (methods does it).
#   methods  (needs c1..c3 carried) DivideMix, PLReMix and CE on real CIFAR-10 with DivideMix's 50% sym
#            noise file, 15 epochs each (time-capped; eval.jsonl has each epoch's seconds), plus
#            bench_data and tests/data's CUDA tests (they need the data). At most 8 files come back per
#            call: the run folders stay in /tmp, their logs come back as runs.tar.gz.
#   first    build, selftest --quick and bench with shorter caps: everything a session with 15 minutes of
#            device time can fit into one call (about 9 minutes); the kernels' first real run.
#
# A session with 15 minutes of device time (the machine's start counts): one call, then give_back:
#   carry []  bash benchmarks/gpu_session.sh first
# A session with 30 minutes, three calls (names in `carry`; each call also keeps what the last left on the
# warm machine):
#   1. carry [.gpu_data/c1]  bash benchmarks/gpu_session.sh build selftest test
#   2. carry [.gpu_data/c2]  bash benchmarks/gpu_session.sh bench
#   3. carry [.gpu_data/c3]  bash benchmarks/gpu_session.sh methods
# Logs, junit and benchmarks/RESULTS.md come back under $OUT; copy the new RESULTS.md rows into the
# checkout here. The machine is given back 30 s after a call: make the next call at once (a fresh
# machine rebuilds first, ~4 minutes, and has lost the chunks of the earlier calls).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-$PWD/gpu_out}
mkdir -p "$OUT"
PY=${PYTHON:-python3}
SRC=${SRC:-data}
export PYTHONUNBUFFERED=1

log() { echo "[gpu_session $(date -u +%H:%M:%S)] $*" | tee -a "$OUT/session.log"; }

stage_pack() {
    rm -rf .gpu_data && mkdir -p .gpu_data/stage .gpu_data/c1 .gpu_data/c2 .gpu_data/c3
    tar -C "$SRC" -cf .gpu_data/stage/all.tar cifar10/train.npz cifar10/test.npz \
        noise_labels/dividemix_json/cifar10
    split -n 3 -d .gpu_data/stage/all.tar .gpu_data/stage/part.
    mv .gpu_data/stage/part.00 .gpu_data/c1/ && mv .gpu_data/stage/part.01 .gpu_data/c2/ \
        && mv .gpu_data/stage/part.02 .gpu_data/c3/
    sha256sum .gpu_data/stage/all.tar | cut -d' ' -f1 > .gpu_data/c3/all.sha256
    rm -rf .gpu_data/stage
    du -sh .gpu_data/c*
}

stage_build() {
    log "build: torch $($PY -c 'import torch; print(torch.__version__, torch.cuda.get_device_name())')"
    TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-9.0} MAX_JOBS=${MAX_JOBS:-16} LNL_CUDA=1 \
        $PY -m pip install --no-build-isolation --no-deps -e . > "$OUT/build.log" 2>&1
    local rc=$?
    tail -n 5 "$OUT/build.log"
    $PY -m lnl.info 2>&1 | tee "$OUT/lnl_info.txt"
    return $rc
}

stage_test() {
    log "test: CUDA tests (tests/data's need the CIFAR-10 of call 3: run there)"
    $PY -m pytest -q -m cuda tests --ignore=tests/data --junitxml "$OUT/cuda_tests.xml" -p no:cacheprovider 2>&1 \
        | tee "$OUT/cuda_tests.log" | tail -n 25
    log "test: the ops suite (CPU and CUDA backends side by side)"
    $PY -m pytest -q tests/ops -p no:cacheprovider 2>&1 | tee "$OUT/ops_tests.log" | tail -n 5
}

built() {  # a machine given back between calls comes back bare: build again (costs ~4 minutes)
    $PY -c 'import lnl._C' 2>/dev/null || { log "lnl._C missing: the machine is a fresh one"; stage_build; }
}

stage_selftest() {  # the full grid: a few minutes (SELFTEST_ARGS=--quick: under one)
    built
    log "selftest: python -m lnl.selftest ${SELFTEST_ARGS:-}"
    timeout "${SELFTEST_CAP:-300}" $PY -m lnl.selftest ${SELFTEST_ARGS:-} --json "$OUT/selftest.json" 2>&1 \
        | tee "$OUT/selftest.log" | tail -n 40
    return "${PIPESTATUS[0]}"
}

stage_bench() {  # each capped so that the call ends inside its 10 minutes (BENCH_SCALE < 1: shorter caps)
    built
    local scale=${BENCH_SCALE:-1}
    cap() { $PY -c "print(max(30, int($1 * $scale)))"; }
    log "bench: knn (the issue's GPU sizes, 3 repetitions)"
    timeout "$(cap 270)" $PY benchmarks/bench_knn.py --device cuda --reps 3 --record 2>&1 | tee "$OUT/bench_knn.log" | tail -n 15
    log "bench: gmm"
    timeout "$(cap 150)" $PY benchmarks/bench_gmm.py --record 2>&1 | tee "$OUT/bench_gmm.log" | tail -n 15
    log "bench: plr"
    timeout "$(cap 130)" $PY benchmarks/bench_plr.py --device cuda --sizes 128 512 1024 4096 8192 --record 2>&1 \
        | tee "$OUT/bench_plr.log" | tail -n 15
    log "bench: plr, bfloat16 at D = 512 (the backward's tensor-core H F and four D slices)"
    timeout 40 $PY benchmarks/bench_plr.py --device cuda --sizes 128 2048 --dim 512 --dtype bfloat16 \
        --reps 5 --record 2>&1 | tee "$OUT/bench_plr_bf16.log" | tail -n 8
}

stage_unpack() {  # reassemble the carried chunks once (they stay on the warm machine between calls)
    [ -f "$DATA/cifar10/train.npz" ] && return 0
    local parts=(.gpu_data/c1/part.00 .gpu_data/c2/part.01 .gpu_data/c3/part.02)
    for p in "${parts[@]}"; do [ -f "$p" ] || { log "missing $p: carry .gpu_data/c1..c3 first"; return 1; }; done
    mkdir -p "$DATA"
    cat "${parts[@]}" > .gpu_data/all.tar
    [ "$(sha256sum .gpu_data/all.tar | cut -d' ' -f1)" = "$(cat .gpu_data/c3/all.sha256)" ] \
        || { log "chunk checksum mismatch"; return 1; }
    tar -C "$DATA" -xf .gpu_data/all.tar && rm .gpu_data/all.tar
}

stage_methods() {  # caps sum to ~480 s: the call's 600 s include the unpacking and the transfers
    stage_unpack || return 1
    built
    local noise=$DATA/noise_labels/dividemix_json/cifar10/0.50.json
    local runs=/tmp/gpu_runs  # run folders stay here; only their logs come back (8 files a call)
    local common=(--data_path "$DATA/cifar10" --noise_mode sym --r 0.5 --noise_file "$noise" --device cuda
                  --no-tensorboard --resume none)
    export LNL_TEST_DATA=$DATA  # where tests/data finds the real CIFAR-10 and noise files
    log "test: the CUDA tests of tests/data (GPU loader and augmentation vs the CPU)"
    timeout 60 $PY -m pytest -q -m cuda tests/data -p no:cacheprovider 2>&1 | tee "$OUT/cuda_data_tests.log" | tail -n 5
    log "bench: data (the GPU loader vs torchvision's)"
    timeout 50 $PY benchmarks/bench_data.py --device cuda --root "$DATA/cifar10" --record 2>&1 \
        | tee "$OUT/bench_data.log" | tail -n 6
    cp benchmarks/RESULTS.md "$OUT/RESULTS.md"
    # 15 epochs each (warm-up 10, then 5 co-divide epochs; LR /10 from epoch 7 as the originals' halfway
    # step), each capped: eval.jsonl keeps every finished epoch, with its seconds.
    log "methods: DivideMix, epochs 0..14, warm-up 10"
    timeout 140 $PY methods/dividemix/Train_cifar.py "${common[@]}" --num_epochs 14 --warm_up 10 --lambda_u 25 \
        --amp --out "$runs/dividemix" 2>&1 | grep -v '%|' | tail -n 3
    log "methods: PLReMix, the same schedule"
    timeout 170 $PY methods/plremix/train.py "${common[@]}" --num_epochs 14 --warm_up 10 --lambda_u 25 \
        --amp --out "$runs/plremix" 2>&1 | grep -v '%|' | tail -n 3
    log "methods: CE baseline, 15 epochs on the same step schedule"
    timeout 60 $PY methods/standard/train.py --dataset cifar10 "${common[@]}" --num_epochs 15 --lr_schedule step \
        --amp --out "$runs/standard" 2>&1 | grep -v '%|' | tail -n 3
    cat "$runs"/*/results.jsonl > "$OUT/methods_results.jsonl" 2>/dev/null
    tar -C "$runs" -czf "$OUT/runs.tar.gz" --exclude '*.pth' --exclude '*.npz' .
}

stage_first() {  # one call of ~9 minutes: build ~4, selftest --quick ~1, benchmarks ~4
    stage_build || return 1
    SELFTEST_ARGS=--quick SELFTEST_CAP=90 stage_selftest
    local selftest=$?
    BENCH_SCALE=0.45 stage_bench
    return $selftest
}

[ $# -gt 0 ] || { sed -n 2,35p "$0"; exit 2; }
status=0
DATA=${DATA:-$PWD/.gpu_data/data}
for stage in "$@"; do
    case $stage in
        pack|build|selftest|test|bench|unpack|methods|first) "stage_$stage" || status=1 ;;
        *) echo "unknown stage $stage (pack, build, selftest, test, bench, unpack, methods, first)"; exit 2 ;;
    esac
done
cp benchmarks/RESULTS.md "$OUT/RESULTS.md" 2>/dev/null
exit $status
