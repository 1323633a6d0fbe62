#!/usr/bin/env bash
# The GPU check in one command, sized for the machine the project is lent: one H200, 16 cores,
# its own Python 3.12 and torch, no network, 15 minutes of device time in all, 8 files back.
#
#   bash bench/gpu_wheels.sh .whl               # here, once: the wheels its image lacks
#   bash bench/gpu_check.sh OUT                 # there: one command, under BUDGET seconds
#   GPU_CHECK_DRY_RUN=1 bash bench/gpu_check.sh /tmp/dry   # here, on the CPU, tiny sizes
#   GPU_CHECK_SKIP="cuda-tests study" ...                   # leave steps out by name
#
# It installs the carried wheels (WHEELS, default .whl) into a folder on PYTHONPATH, records the
# environment, then runs each step time-boxed, skipping (and saying so) one that would not fit
# in what is left of BUDGET (default 480 s):
#   1. the CUDA tests (tests whose names say gpu or cuda);
#   2. a 512 px cache from a few dozen camera-sized photographs, its training list repeated
#      until one epoch holds EPOCH_IMAGES (2,048) images;
#   3. bench/train_speed.py at ResNet50 / 512 px / bf16 (cuDNN benchmark on, as in runs): CPU
#      decoding with flip, GPU decoding with flip, CPU decoding with strong; images/s of the
#      pipeline and in memory, their ratio, peak memory, FLOP utilisation, and the GPU's
#      utilisation sampled alongside (nvidia-smi dmon);
#   4. bench/loader_speed.py: images/s per loader worker;
#   5. a short demo study on the GPU;
#   6. the lab's study on real photographs: the 20 committed IDRiD photographs
#      (tests/fixtures/idrid) prepared at 224 px, ResNet18 and ResNet50, 10 epochs;
#   7. one compiled run if time is left.
# OUT receives two files: summary.txt (the environment, every number, each step's status and
# time) and logs.tar.gz (every step's whole output). Caches, stores and checkpoints stay in WORK.
# The exit status is the number of steps that failed (skipped ones do not count).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=$(mkdir -p "${1:-gpu-check}" && cd "${1:-gpu-check}" && pwd)
WORK=${GPU_CHECK_WORK:-$(mktemp -d "${TMPDIR:-/tmp}/gpu-check-work.XXXXXX")}
mkdir -p "$WORK/logs"
BUDGET=${BUDGET:-480}
WHEELS=${WHEELS:-.whl}
PY=${PYTHON:-$(command -v python || command -v python3)}
SUMMARY="$OUT/summary.txt"
START=$SECONDS
failed=0
: > "$SUMMARY"

if [ "${GPU_CHECK_DRY_RUN:-0}" = 1 ]; then  # the same steps on a CPU, in about two minutes
  DEVICE=cpu PRECISION=fp32 MODEL=resnet18 RES=64 PHOTOS=30 EPOCH_IMAGES=48 BATCH=8 STEPS=2
  ROUNDS=1 LOADER_IMAGES=16 STUDY=(+preset=smoke) WIDTH=320 HEIGHT=240
  REAL_RES=64 REAL_STUDY=(epochs=1 batch_size=8 cam_per_grade=0 bootstrap_rounds=50)
  COMPILE=0  # torch.compile on a CPU takes minutes: the compiled run is the GPU's
else
  DEVICE=cuda PRECISION=bf16 MODEL=resnet50 RES=512 PHOTOS=48 EPOCH_IMAGES=2048 BATCH=64
  STEPS=20 ROUNDS=3 LOADER_IMAGES=192 STUDY=(epochs=2 data.train_size=1000)
  WIDTH=1944 HEIGHT=1296 COMPILE=1
  REAL_RES=224 REAL_STUDY=(epochs=10)  # the committed photographs are 384 x 255
fi
EPOCH_IMAGES=${EPOCH_IMAGES_OVERRIDE:-$EPOCH_IMAGES}
export MLFLOW_TRACKING_URI="sqlite:///$WORK/mlflow.db" MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR=false
export PYTHONUNBUFFERED=1

say() { echo "$*" | tee -a "$SUMMARY"; }

left() { echo $((BUDGET - (SECONDS - START))); }

step() {  # step NAME ESTIMATE_S COMMAND...: run it time-boxed, or skip it when it cannot fit
  local name=$1 estimate=$2; shift 2
  if [[ " ${GPU_CHECK_SKIP:-} " == *" $name "* ]]; then
    say "== $name: SKIPPED (GPU_CHECK_SKIP)"
    return
  fi
  local remaining; remaining=$(left)
  if [ "$remaining" -lt "$estimate" ]; then
    say "== $name: SKIPPED (needs about ${estimate} s, ${remaining} s left of ${BUDGET})"
    return
  fi
  say "== $name: $*"
  local started=$SECONDS
  # through bash -c: a step may be one of the functions below (exported to it)
  timeout --kill-after=10 "$remaining" bash -c '"$@"' "$name" "$@" > "$WORK/logs/$name.log" 2>&1
  local status=$?
  if [ "$status" -eq 0 ]; then
    tail -n 12 "$WORK/logs/$name.log" >> "$SUMMARY"
  elif [ "$status" -eq 124 ] || [ "$status" -eq 137 ]; then
    failed=$((failed + 1))
    { echo "TIMED OUT after $((SECONDS - started)) s:"; tail -n 20 "$WORK/logs/$name.log"; } \
      >> "$SUMMARY"
  else
    failed=$((failed + 1))
    { echo "FAILED (exit $status):"; tail -n 40 "$WORK/logs/$name.log"; } >> "$SUMMARY"
  fi
  say "   ($((SECONDS - started)) s; $(left) s left)"
}

sampled() {  # sampled NAME COMMAND...: the GPU's utilisation, each second, while it runs
  local name=$1; shift
  if command -v nvidia-smi > /dev/null; then
    nvidia-smi dmon -s um -d 1 > "$WORK/logs/$name-dmon.log" 2>&1 &
    local sampler=$!
    "$@"; local status=$?
    kill "$sampler" 2> /dev/null; wait "$sampler" 2> /dev/null
    awk '$1 ~ /^[0-9]+$/ { sm += $2; mem += $3; n++ }
         END { if (n) printf "GPU utilisation while it ran: SM %.0f %%, memory %.0f %% (%d samples)\n",
               sm / n, mem / n, n }' "$WORK/logs/$name-dmon.log"
    return "$status"
  fi
  "$@"
}

environment() {
  echo "date: $(date -u +%FT%TZ)   budget: ${BUDGET} s   work: $WORK"
  command -v nvidia-smi > /dev/null \
    && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
  "$PY" -c "import sys, torch, torchvision; print('python', sys.version.split()[0], '| torch',
torch.__version__, '| torchvision', torchvision.__version__, '| cuda', torch.version.cuda,
'| available', torch.cuda.is_available())"
  echo "cores: $(nproc) (affinity), $(getconf _NPROCESSORS_ONLN) online"
  df -h /dev/shm 2> /dev/null | tail -n 1 | awk '{print "/dev/shm: " $2 " size, " $4 " free"}'
  echo "OMP_NUM_THREADS=${OMP_NUM_THREADS:-unset} MKL_NUM_THREADS=${MKL_NUM_THREADS:-unset}"
}

install_wheels() {
  if ! ls "$WHEELS"/*.whl > /dev/null 2>&1; then
    echo "no wheels in $WHEELS: using what this Python has"
    return 0
  fi
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target "$WORK/site" "$WHEELS"/*.whl && echo "$(ls "$WHEELS"/*.whl | wc -l) wheels installed"
}

make_source() {  # camera-sized synthetic photographs in Kaggle's layout
  "$PY" - "$WORK/source" "$PHOTOS" "$WIDTH" "$HEIGHT" <<'PY'
import csv, sys
from pathlib import Path
sys.path.insert(0, "bench")
from prepare_speed import make_kaggle_like_jpegs
source, n, width, height = Path(sys.argv[1]), *map(int, sys.argv[2:])
paths = make_kaggle_like_jpegs(source / "train", n, width, height)
with (source / "trainLabels.csv").open("w", newline="") as f:
    csv.writer(f).writerows([("image", "level"), *((p.stem, i % 5) for i, p in enumerate(paths))])
print(f"{len(paths)} photographs of {width}x{height} in {source}")
PY
}

lengthen_epoch() {  # list the training images again until one epoch holds EPOCH_IMAGES
  "$PY" - "$CACHE" "$EPOCH_IMAGES" <<'PY'
import sys
from pathlib import Path
cache, wanted = Path(sys.argv[1]), int(sys.argv[2])
names = (cache / "train_img.csv").read_text().split()
grades = (cache / "train_label.csv").read_text().split()
times = -(-wanted // len(names))
(cache / "train_img.csv").write_text("".join(f"{n}\n" for n in names * times))
(cache / "train_label.csv").write_text("".join(f"{g}\n" for g in grades * times))
print(f"{len(names)} training photographs listed {times} times: {len(names) * times} per epoch")
PY
}

real_study() {  # real_study OVERRIDES...: the lab's study on the committed IDRiD photographs
  "$PY" -m retino.data.prepare tests/fixtures/idrid "$WORK/idrid" --size "$REAL_RES" --no-audit &&
    "$PY" run.py -m model=resnet18,resnet50 device="$DEVICE" log_model=false data=kaggle \
      data.root="$WORK/idrid/center_crop-${REAL_RES}px" data.val_fraction=0.2 \
      resolution.size="$REAL_RES" hydra.sweep.dir="$WORK/real-study" "$@"
}

# Run with the machine's every core: an image that sets OMP_NUM_THREADS=1 would make
# data.num_workers=auto choose no loader worker (the environment above records what it was).
environment_text=$(environment 2>&1)
say "== environment"; say "$environment_text"
unset OMP_NUM_THREADS
install_status=$(install_wheels 2>&1) || failed=$((failed + 1))
say "== wheels: $install_status"
[ -d "$WORK/site" ] && export PYTHONPATH="$WORK/site:${PYTHONPATH:-}"

CACHE="$WORK/cache/center_crop-${RES}px"
export PY WORK PHOTOS WIDTH HEIGHT CACHE EPOCH_IMAGES DEVICE REAL_RES
export -f sampled make_source lengthen_epoch real_study
SPEED=("$PY" bench/train_speed.py --data "$CACHE" --model "$MODEL" --resolution "$RES"
       --precision "$PRECISION" --batch-size "$BATCH" --steps "$STEPS" --rounds "$ROUNDS"
       --device "$DEVICE")

# one process (-o addopts: no -n auto): the lent machine's wheels carry pytest, not pytest-xdist
step cuda-tests 20 "$PY" -m pytest -o addopts=--strict-markers -q -rs -p no:cacheprovider \
  -k "gpu or cuda" tests
step source 10 make_source
step prepare 15 "$PY" -m retino.data.prepare "$WORK/source" "$WORK/cache" --size "$RES" \
  --quality off --no-audit
step epoch 2 lengthen_epoch
step train-speed-cpu-decode 20 sampled train-speed-cpu-decode "${SPEED[@]}"
step train-speed-gpu-decode 20 sampled train-speed-gpu-decode "${SPEED[@]}" --decode gpu
step train-speed-strong 20 sampled train-speed-strong "${SPEED[@]}" --augmentation strong
step loader-speed 20 "$PY" bench/loader_speed.py --data "$CACHE" --resolution "$RES" \
  --rounds 2 --images "$LOADER_IMAGES"
step study 60 "$PY" run.py -m model=resnet18,resnet50 device="$DEVICE" log_model=false \
  data.root="$WORK/demo" hydra.sweep.dir="$WORK/study" "${STUDY[@]}"
step real-study 60 real_study "${REAL_STUDY[@]}"
if [ "$COMPILE" = 1 ]; then
  step compiled-run 90 "$PY" run.py model=resnet50 device="$DEVICE" compile=true \
    log_model=false data.root="$WORK/demo" hydra.run.dir="$WORK/compiled" "${STUDY[@]}"
fi

say "== $failed step(s) failed, in $((SECONDS - START)) s of ${BUDGET}; whole logs: logs.tar.gz"
tar -czf "$OUT/logs.tar.gz" -C "$WORK" logs
exit "$failed"
