#!/usr/bin/env bash
# Exhaustive validation sweeps behind docs/experiments.md ("Which signal predicts post-split
# accuracy?"): every admissible point of each demo network is cut, a bottleneck is trained there
# and tested, and every predictor of the analysis (CUI, probe, taylor, cam-share, pca-probe) is
# scored with the baselines (bytes, depth, logistic probe) and the leave-one-out combinations.
#
#   benchmarks/predictors_sweep.sh [OUT]          # default OUT: runs/predictors
#
# Writes OUT/<net>/ (the analysis: curves.json, per_image.npz, curves.png), OUT/<net>-c8/ and
# OUT/<net>-c16h/ (validation.json, validation.png, validation_points/), the same bottlenecks
# trained with other seeds at a few of the points in OUT/<net>-<strength>-seed<k>/ (isplit validate
# --bottleneck-seed k: the same training and test images, so the runs are paired), then
# OUT/tables.md and OUT/summary.json (benchmarks/predictor_tables.py, with the seed noise).
# Rerunning resumes: finished points are kept.
#
# Environment:
#   ISPLIT     the command (default: isplit; on a machine without the console script:
#              ISPLIT="python3 -m isplit" with PYTHONPATH=src)
#   PYTHON     python for the table script (default: python3)
#   DATA_ROOT  where the Fashion-MNIST .gz files are (default: isplit's search path)
#   DEVICE     cpu, cuda or auto (default: auto)
#   NETS       which networks (default: "demo-vgg16 demo-resnet50 demo-mobilenet demo-convnext
#              demo-vit")
#   NPROC      processes per validation sweep (isplit validate --nproc: the points are shared
#              out; the same accuracies as one process; default 1)
#   STRENGTHS  the bottlenecks (default: "c8 c16h": channels / 8; channels / 16, H and W halved;
#              at a ViT's token points the patch grid is halved and the class token crosses
#              alone, see isplit validate --halve)
#   SEEDS      the further bottleneck seeds of each sweep (default: "1 2"; the sweep itself is
#              seed 0; SEEDS="" for none)
#   SEED_POINTS  where the seeds are trained: a count of points evenly spread over the sweep's
#              validated points in network order (default: 5), or point names (a,b,c)
#   QUICK=1    a tiny end-to-end check instead of the real sweep: 400 analysed images, 3 points
#              per network, 300 training / 200 test images, 1 epoch, 50 bootstrap resamples
#
# demo-mobilenet's weights ship with isplit; others can be passed with MOBILENET_WEIGHTS.
set -euo pipefail

OUT=${1:-runs/predictors}
ISPLIT=${ISPLIT:-isplit}
PYTHON=${PYTHON:-python3}
DEVICE=${DEVICE:-auto}
NETS=${NETS:-demo-vgg16 demo-resnet50 demo-mobilenet demo-convnext demo-vit}
SEEDS=${SEEDS-1 2}
SEED_POINTS=${SEED_POINTS:-5}
PREDICTORS=probe,taylor,cam-share,pca-probe
HERE=$(cd "$(dirname "$0")" && pwd)

common=(--device "$DEVICE" --quiet)
nproc=()
[ "${NPROC:-1}" != 1 ] && nproc=(--nproc "$NPROC")
[ -n "${DATA_ROOT:-}" ] && common+=(--data-root "$DATA_ROOT")

if [ "${QUICK:-0}" = 1 ]; then
  analyse=(--limit 400)
  validate=(--train-limit 300 --test-limit 200 --epochs 1 --bootstrap 50)
else
  analyse=()  # the whole Fashion-MNIST test set, 10 000 images
  validate=()  # defaults: 4 epochs, 8 000 training and 5 000 test images
fi

# Points of the quick check (one early, one middle, one late admissible point per network).
quick_points() {
  case "$1" in
    demo-vgg16) echo features.6,features.23,features.42 ;;
    demo-resnet50) echo maxpool,layer2.1.relu_2,layer4.2.relu_2 ;;
    demo-mobilenet) echo features.3.add,features.10.add,features.18.2 ;;
    demo-convnext) echo features.0.1.layer_norm,features.4.0.layer_norm,features.7.1.add ;;
    demo-vit) echo cat,encoder.layers.encoder_layer_2.add_1,encoder.ln ;;
  esac
}

# The points of a sweep's seed runs: SEED_POINTS names, or that many points evenly spread over
# the points the sweep validated (its validation.json, in network order).
seed_points() {
  $PYTHON -c '
import json, sys
want, names = sys.argv[2], [p["name"] for p in json.load(open(sys.argv[1]))["points"]]
if not want.isdigit():
    print(want)
else:
    n = min(int(want), len(names))
    picked = sorted({round(i * (len(names) - 1) / max(n - 1, 1)) for i in range(n)})
    print(",".join(names[i] for i in picked))
' "$1/validation.json" "$SEED_POINTS"
}

# Validate into folder $1 (a copy of the analysis goes there first, so that `isplit report`
# works on it) with the further arguments.
validate_into() {
  local folder=$1
  shift
  mkdir -p "$folder"
  cp -p "$run/curves.json" "$run/per_image.npz" "$run/curves.png" "$folder/"
  # the network is the one the analysis recorded (name, weights, seed)
  $ISPLIT validate "${common[@]}" --analysis "$folder" "$@" \
    ${validate[@]+"${validate[@]}"} ${nproc[@]+"${nproc[@]}"}
}

# Which bottlenecks each network is swept at: channels / 8, and channels / 16 with H and W
# halved (STRENGTHS="c8" for the first only).
strengths() {
  echo "${STRENGTHS:-c8 c16h}"
}

mkdir -p "$OUT"
for net in $NETS; do
  model=(--model "$net")
  if [ "$net" = demo-mobilenet ] && [ -n "${MOBILENET_WEIGHTS:-}" ]; then
    model+=(--weights "$MOBILENET_WEIGHTS")
  fi
  run="$OUT/$net"
  if [ ! -f "$run/curves.json" ]; then
    echo "== analyse $net" >&2
    TIMEFORMAT="analysis of $net: %R s"
    time $ISPLIT analyze "${model[@]}" "${common[@]}" ${analyse[@]+"${analyse[@]}"} \
      --predictors "$PREDICTORS" --out "$run"
  fi
  for s in $(strengths "$net"); do
    case "$s" in
      c8) strength=(--ratio 8) ;;
      c16h) strength=(--ratio 16 --halve) ;;
    esac
    points=(--points all)
    [ "${QUICK:-0}" = 1 ] && points=(--points "$(quick_points "$net")")
    echo "== validate $net at $s" >&2
    TIMEFORMAT="validation of $net at $s: %R s"
    time validate_into "$OUT/$net-$s" "${strength[@]}" "${points[@]}"
    [ -z "$SEEDS" ] && continue
    chosen=$(seed_points "$OUT/$net-$s")
    for k in $SEEDS; do
      echo "== validate $net at $s, bottleneck seed $k: $chosen" >&2
      TIMEFORMAT="validation of $net at $s, bottleneck seed $k: %R s"
      time validate_into "$OUT/$net-$s-seed$k" "${strength[@]}" --points "$chosen" \
        --bottleneck-seed "$k"
    done
  done
done

$PYTHON "$HERE/predictor_tables.py" "$OUT" --json "$OUT/summary.json" > "$OUT/tables.md"
echo "wrote $OUT/tables.md and $OUT/summary.json" >&2
