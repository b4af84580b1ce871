#!/usr/bin/env bash
# The GPU check of analysis speed against the bare pass, for a machine with one CUDA GPU
# (python3 with torch, torchvision, numpy, scipy, matplotlib, safetensors; tqdm, scikit-learn
# and network not needed).
# Run from the repository root:
#
#     OUT=/some/folder bash benchmarks/gpu_check.sh        # results in $OUT (default gpu-check/)
#
# Under 5 minutes on an H200 (benchmarks/scale.py --gpu keeps to a 200 s budget and is stopped
# at 240 s; the CLI checks take under a minute). The table: ResNet-50 and VGG16 at 224 px, fp32
# and bf16, analyze from a Dataset (8,192 images) and from a folder of 8,192 JPEG files on the
# command line, each against the bare pass; the loader alone, uint8 against float32 transport. Prints the environment, the CLI checks' exit
# codes and, last, the JSON report of benchmarks/scale.py --gpu (also in $OUT/scale-gpu.json,
# written after every measurement, so a run cut short keeps what it measured).
# To try it without a GPU: DEVICE=cpu SCALE_ARGS="--images 32 --analyze-images 64 --size 32
# --models resnet18 --batch-size 8 --repeats 1 --folder-images 64" bash benchmarks/gpu_check.sh
set -u
OUT=${OUT:-gpu-check}
DEVICE=${DEVICE:-cuda}
mkdir -p "$OUT"
PY=${PYTHON:-python3}
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"

{
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
  echo "cpus: $($PY -c "import os; print(os.cpu_count())")"; df -h /dev/shm | tail -1
  $PY -c "import sys, torch, torchvision; print(sys.version.split()[0], torch.__version__, torchvision.__version__, 'cuda', torch.cuda.is_available(), torch.cuda.device_count())"
  $PY -c "import tqdm" 2>/dev/null && echo "tqdm: yes" || echo "tqdm: no"
} > "$OUT/env.txt" 2>&1
cat "$OUT/env.txt"

# 1. The command line on the GPU: an image folder (random PNGs, streamed and decoded by the
#    loader's workers), bf16, a checkpoint after every batch, then --nproc beyond the GPUs.
IMAGES=$(mktemp -d)  # not under $OUT: nothing to bring back
$PY - "$IMAGES" <<'PYEOF'
import sys
from pathlib import Path
import numpy as np
from PIL import Image
rng = np.random.default_rng(0)
for c in ("a", "b", "c"):
    d = Path(sys.argv[1]) / c
    d.mkdir(parents=True, exist_ok=True)
    for i in range(100):
        Image.fromarray(rng.integers(0, 256, (72, 72, 3), dtype=np.uint8)).save(d / f"{i}.png")
PYEOF
timeout 120 $PY -m isplit analyze --model resnet18 --weights none --data "$IMAGES" --split all \
  --image-size 64 --device "$DEVICE" --precision bf16 --batch-size 32 --checkpoint-every 2 \
  --out "$OUT/cli-run" > "$OUT/cli-run.log" 2>&1
echo "cli analyze on $DEVICE, bf16: exit code $? (expected 0)"; tail -3 "$OUT/cli-run.log"
$PY - "$OUT/cli-run" <<'PYEOF'
import json, sys
doc = json.load(open(f"{sys.argv[1]}/curves.json"))
print("  images", doc["dataset"]["images"], "precision", doc["settings"]["precision"],
      "device", doc["settings"]["device"], "best", doc["best"])
PYEOF
NDEV=$($PY -c "import os, torch; print(torch.cuda.device_count() if '$DEVICE' == 'cuda' else os.cpu_count())")
timeout 60 $PY -m isplit analyze --model resnet18 --weights none --data "$IMAGES" --split all \
  --image-size 64 --device "$DEVICE" --nproc $((NDEV + 1)) --out "$OUT/cli-too-many" \
  > "$OUT/cli-too-many.log" 2>&1
echo "cli --nproc $((NDEV + 1)) on $NDEV $DEVICE device(s): exit code $? (expected 2)"
cat "$OUT/cli-too-many.log"

timeout 120 $PY -m torch.distributed.run --standalone --nproc-per-node 1 -m isplit analyze \
  --model resnet18 --weights none --data "$IMAGES" --split all --image-size 64 --device "$DEVICE" \
  --batch-size 32 --quiet --out "$OUT/cli-torchrun" > "$OUT/cli-torchrun.log" 2>&1
echo "torchrun -m isplit analyze, 1 process (NCCL on cuda): exit code $? (expected 0)"
tail -2 "$OUT/cli-torchrun.log"
rm -rf "$IMAGES"

# 2. The measurements: analyze vs the bare pass, fp32 and bf16, ResNet-50 and VGG16 at 224 px.
# shellcheck disable=SC2086
timeout 240 $PY benchmarks/scale.py --gpu --device "$DEVICE" --budget-s 200 --images 2048 \
  --analyze-images 8192 --folder-images 8192 ${SCALE_ARGS:-} \
  --json-out "$OUT/scale-gpu.json" > /dev/null 2> "$OUT/scale-gpu.log"
echo "scale.py --gpu: exit code $? (expected 0; errors, if any, in the JSON and $OUT/scale-gpu.log)"
tail -5 "$OUT/scale-gpu.log"
cat "$OUT/scale-gpu.json"
