#!/usr/bin/env bash
# The standing GPU check in one command, for the first machine with a CUDA GPU (about 10 minutes
# on one H200 with 16 cores, most of it the study at the end):
#
#   bash bench/gpu_check.sh [OUT]          # everything lands in OUT (default gpu-check/)
#
# 1. the CUDA tests (tests whose names say gpu or cuda; skipped elsewhere, run here);
# 2. a small prepared cache: 200 camera-sized synthetic photographs -> center_crop 512 px;
# 3. bench/train_speed.py at ResNet50 / 512 px / bf16 on that cache, with JPEGs decoded by the
#    loader workers and then on the GPU (data.decode=gpu): images/s of the full pipeline and of
#    the same step in memory, their ratio, peak memory, model FLOP utilisation;
# 4. bench/loader_speed.py on the cache: images/s per loader worker on this host's cores;
# 5. one demo study on the GPU (ResNet18 and ResNet50, scratch, 3 epochs) and its report.
#
# OUT/summary.txt collects every number; each step's full output is beside it. The exit status
# is the number of steps that failed. Small sizes for a dry run on a CPU:
#   DEVICE=cpu PRECISION=fp32 IMAGES=16 BATCH=4 STEPS=2 ROUNDS=1 LOADER_IMAGES=8 \
#   STUDY_EXTRA=+preset=smoke bash bench/gpu_check.sh /tmp/gpu-check-dry-run
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=$(mkdir -p "${1:-gpu-check}" && cd "${1:-gpu-check}" && pwd)
DEVICE=${DEVICE:-cuda} PRECISION=${PRECISION:-bf16} MODEL=${MODEL:-resnet50}
IMAGES=${IMAGES:-200} BATCH=${BATCH:-64} STEPS=${STEPS:-20} ROUNDS=${ROUNDS:-3}
EPOCHS=${EPOCHS:-3} LOADER_IMAGES=${LOADER_IMAGES:-128} STUDY_EXTRA=${STUDY_EXTRA:-}
export MLFLOW_TRACKING_URI="sqlite:///$OUT/mlflow.db" MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR=false
failed=0

step() {  # step NAME COMMAND...: run it, keep its output, put its last lines in the summary
  local name=$1; shift
  echo "== $name: $*" | tee -a "$OUT/summary.txt"
  local started=$SECONDS
  "$@" > "$OUT/$name.log" 2>&1
  local status=$?
  if [ "$status" -eq 0 ]; then
    tail -n 12 "$OUT/$name.log" >> "$OUT/summary.txt"
  else
    failed=$((failed + 1))
    { echo "FAILED (exit $status):"; tail -n 40 "$OUT/$name.log"; } >> "$OUT/summary.txt"
  fi
  echo "   ($((SECONDS - started)) s)" | tee -a "$OUT/summary.txt"
}

make_source() {  # camera-sized synthetic photographs in Kaggle's layout
  python - "$OUT/source" "$IMAGES" <<'PY'
import csv, sys
from pathlib import Path
sys.path.insert(0, "bench")
from prepare_speed import make_kaggle_like_jpegs
source, n = Path(sys.argv[1]), int(sys.argv[2])
paths = make_kaggle_like_jpegs(source / "train", n, 1944, 1296)
with (source / "trainLabels.csv").open("w", newline="") as f:
    csv.writer(f).writerows([("image", "level"), *((p.stem, i % 5) for i, p in enumerate(paths))])
print(f"{len(paths)} photographs in {source}")
PY
}

CACHE="$OUT/cache/center_crop-512px"
SPEED=(python bench/train_speed.py --data "$CACHE" --model "$MODEL" --resolution 512
       --precision "$PRECISION" --batch-size "$BATCH" --steps "$STEPS" --rounds "$ROUNDS"
       --device "$DEVICE")

step gpu nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
step cuda-tests python -m pytest -q -rs -k "gpu or cuda" tests
step source make_source
step prepare python -m retino.data.prepare "$OUT/source" "$OUT/cache" --size 512
step train-speed "${SPEED[@]}"
step train-speed-decode-gpu "${SPEED[@]}" --decode gpu
step loader-speed python bench/loader_speed.py --data "$CACHE" --resolution 512 --rounds 2 \
  --images "$LOADER_IMAGES"
step study python run.py -m model=resnet18,resnet50 device="$DEVICE" epochs="$EPOCHS" \
  log_model=false data.root="$OUT/demo" hydra.sweep.dir="$OUT/study" $STUDY_EXTRA
echo "== $failed step(s) failed; summary: $OUT/summary.txt" | tee -a "$OUT/summary.txt"
exit "$failed"
