#!/usr/bin/env bash
# The GPU path in one run (< 8 minutes on one H200): training throughput on CUDA (bf16 autocast,
# channels-last, torch.compile on and off) against the textbook ConvLSTM with the fraction of the
# GPU's dense bf16 peak, then the `paper` configuration (64 x 64) trained on 9,000 synthetic
# galaxies: its epoch time, throughput and detection quality. Prints one table, writes JSON.
#
#   bash benchmarks/gpu_check.sh                    # on a machine with a GPU
#   bash benchmarks/gpu_check.sh --dry-run          # the whole script on the CPU in tiny sizes
#   OUT=/tmp/gpu N=9000 EPOCHS=6 bash benchmarks/gpu_check.sh
#
# Settings (environment): OUT (results folder, default benchmarks/results/gpu_check), N (galaxies,
# 9000), EPOCHS (paper epochs, 6), BATCH (paper batch, 64), WORKERS (synth/ingest processes, all
# cores), PEAK (dense bf16 TFLOP/s for the % of peak; known GPUs by name), PYTHON (default python).
# Writes $OUT/train_throughput-<device>.json, $OUT/gpu_check.json and the survey, dataset and run
# under $OUT/work (deleted at the end unless KEEP=1).
set -euo pipefail

DRY=0
for arg in "$@"; do
  case "$arg" in
    --dry-run) DRY=1 ;;
    -h|--help) sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "unknown option $arg (use --dry-run or --help)" >&2; exit 2 ;;
  esac
done

cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python}
OUT=${OUT:-benchmarks/results/gpu_check}
WORKERS=${WORKERS:-$(nproc)}
if [ "$DRY" = 1 ]; then
  # Tiny sizes on the CPU: every step of the real run, in about two minutes.
  # 40 galaxies: the fewest that hold a true anomaly (2 %), so the evaluation has both classes.
  N=${N:-40}; EPOCHS=${EPOCHS:-1}; BATCH=${BATCH:-8}; DEVICE=cpu; FIT=(--repeats 1 --num-workers 0)
  THROUGHPUT=(--device cpu --configs demo paper --steps 1 --rounds 1 --warmup 1 --no-reference --batch-size 4)
else
  N=${N:-9000}; EPOCHS=${EPOCHS:-6}; BATCH=${BATCH:-64}; DEVICE=cuda; FIT=(--compile --num-workers 4)
  $PYTHON -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 'no CUDA device: run with --dry-run on the CPU')"
  # --compile adds the torch.compile row; bf16 autocast and channels-last are on for CUDA.
  THROUGHPUT=(--device cuda --configs demo paper --compile --no-reference --steps 10 --rounds 3 --warmup 3)
fi
[ -n "${PEAK:-}" ] && THROUGHPUT+=(--peak-tflops "$PEAK")
WORK="$OUT/work"
rm -rf "$WORK"
mkdir -p "$OUT" "$WORK"
T0=$(date +%s)
stamp() { echo "$(( $(date +%s) - T0 ))"; }

echo "== 1/3 training throughput ($DEVICE)"
$PYTHON benchmarks/train_throughput.py "${THROUGHPUT[@]}" --out "$OUT"
T_THROUGHPUT=$(stamp)

echo "== 2/3 $N synthetic galaxies at 64 x 64"
$PYTHON -m train synth --out "$WORK/survey" --n "$N" --seed 9 --workers "$WORKERS" --quiet
T_SYNTH=$(stamp)
$PYTHON -m train ingest "$WORK/survey" --out "$WORK/dataset" --size 64 --workers "$WORKERS" --quiet
T_INGEST=$(stamp)

echo "== 3/3 the paper configuration: $EPOCHS epochs, batch $BATCH"
$PYTHON -m train fit --data "$WORK/dataset" --run "$WORK/paper" --config paper --epochs "$EPOCHS" \
  --batch-size "$BATCH" --device "$DEVICE" "${FIT[@]}"
T_FIT=$(stamp)
$PYTHON -m train embed --run "$WORK/paper" --device "$DEVICE" --quiet
$PYTHON -m train evaluate --run "$WORK/paper" > /dev/null
T_EVAL=$(stamp)

$PYTHON - "$OUT" "$WORK/paper" "$DRY" "$N" "$T_THROUGHPUT" "$T_SYNTH" "$T_INGEST" "$T_FIT" "$T_EVAL" <<'EOF'
"""Collect the three parts into one table and gpu_check.json."""
import csv
import glob
import json
import sys
from datetime import date
from pathlib import Path

out, run, dry, n = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3] == "1", int(sys.argv[4])
t_tp, t_synth, t_ingest, t_fit, t_eval = map(int, sys.argv[5:10])
tp = json.loads(Path(sorted(glob.glob(str(out / "train_throughput-*.json")))[-1]).read_text())
manifest = json.loads((run / "manifest.json").read_text())
history = list(csv.DictReader(open(run / "history.csv")))
evaluation = json.loads((run / "evaluation.json").read_text())
epochs = [float(h["seconds"]) for h in history]
metrics = manifest.get("metrics") or {}
headline = evaluation["tasks"][0]
result = {
    "benchmark": "gpu_check", "date": date.today().isoformat(), "dry_run": dry, "device": tp["device"],
    "torch": tp["torch"], "bf16_peak_tflops": tp.get("bf16_peak_tflops"), "throughput": tp["rows"],
    "paper": {"galaxies": n, "n_train": manifest.get("n_train"), "epochs": len(epochs),
              "first_epoch_seconds": epochs[0], "epoch_seconds": sorted(epochs)[len(epochs) // 2],
              "galaxies_per_second": metrics.get("galaxies_per_second"), "best_val_loss": metrics.get("best_val_loss"),
              "roc_auc": headline["model"]["roc_auc"], "average_precision": headline["model"]["average_precision"],
              "pca_roc_auc": headline["pca"]["roc_auc"], "flagged": evaluation.get("flagged")},
    "seconds": {"throughput": t_tp, "synth": t_synth - t_tp, "ingest": t_ingest - t_synth, "fit": t_fit - t_ingest,
                "embed_evaluate": t_eval - t_fit, "total": t_eval},
}
print(f"\nGPU check on {result['device']}, torch {result['torch']}" + (" (DRY RUN: CPU, tiny sizes)" if dry else ""))
print(f"{'config':6} {'model':18} {'batch':>5} {'GFLOP/gal':>9} {'gal/s':>9} {'TFLOP/s':>8} {'% bf16 peak':>11} "
      f"{'vs textbook':>11}")
for r in tp["rows"]:
    pct = r.get("pct_of_bf16_peak")
    print(f"{r['config']:6} {r['model']:18} {r['batch']:5d} {r['gflop_per_galaxy']:9.3f} {r['galaxies_per_second']:9.1f} "
          f"{r['gflop_per_second'] / 1e3:8.3f} {'n/a' if pct is None else f'{pct:.2f} %':>11} "
          f"{r['speedup_vs_textbook']:10.2f}x")
p = result["paper"]


def fmt(v):  # a task without both classes has no figure
    return "n/a" if v is None else f"{v:.3f}"


print(f"paper on {n} synthetic galaxies at 64 x 64: {p['epochs']} epochs, epoch {p['epoch_seconds']:.1f} s "
      f"(first {p['first_epoch_seconds']:.1f} s), {p['galaxies_per_second']} galaxies/s, best val loss "
      f"{p['best_val_loss']:.3g}; anomalies ROC-AUC {fmt(p['roc_auc'])}, AP {fmt(p['average_precision'])} "
      f"(PCA {fmt(p['pca_roc_auc'])})")
s = result["seconds"]
print("wall seconds: " + ", ".join(f"{k} {v}" for k, v in s.items()))
(out / "gpu_check.json").write_text(json.dumps(result, indent=2) + "\n")
print(f"wrote {out / 'gpu_check.json'}")
EOF
[ "${KEEP:-0}" = 1 ] || rm -rf "$WORK"
