#!/usr/bin/env bash
# Runs one config in every optimizer mode with the same seed and data order, then writes
# OUT/results.md (the ablation table) and OUT/val_loss.png, OUT/pareto.png.
#   tools/ablate.sh CONFIG [--out DIR] [--modes "master naive sr eco eco_sr"] [--build DIR] [--resume]
#                   [eco_train args...]
# --resume continues an interrupted ablation: finished modes are kept, the others resume from their
# newest checkpoint (or start if they have none). Without --resume, earlier runs in OUT are replaced.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
[[ $# -ge 1 && $1 != -* ]] || { sed -n '2,8p' "$0"; exit 2; }
config=$1; shift
name=$(basename "$config" .json)
out="runs/ablate/$name"
modes="fp32 bf16 bf16_sr master master_sr naive sr eco eco_sr"
build=${ECO_BUILD:-$root/build}
extra=()
resume=0
resume_flag=(--overwrite)  # a fresh ablation replaces an earlier one in the same OUT
while [[ $# -gt 0 ]]; do
  case $1 in
    --out) out=$2; shift 2 ;;
    --modes) modes=$2; shift 2 ;;
    --build) build=$2; shift 2 ;;
    --resume) resume=1; resume_flag=(--resume); shift ;;
    *) extra+=("$1"); shift ;;
  esac
done
mkdir -p "$out"
dirs=()
for mode in $modes; do
  dirs+=("$out/$mode")
  if [[ $resume -eq 1 ]] && grep -q "info done:" "$out/$mode.log" 2>/dev/null; then
    echo "=== ablate: $name, mode $mode: finished earlier, kept ==="
    continue
  fi
  echo "=== ablate: $name, mode $mode ==="
  rc=0
  [[ $resume -eq 1 ]] || : > "$out/$mode.log"  # a resumed mode appends to its earlier log
  "$build/eco_train" --config "$config" --set optim.mode="$mode" --out "$out/$mode" "${resume_flag[@]}" "${extra[@]}" \
    >> "$out/$mode.log" 2>&1 || rc=$?
  # Exit code 5 = diverged: an expected outcome for `naive`, still part of the table.
  if [[ $rc -ne 0 && $rc -ne 5 ]]; then
    echo "ablate: mode $mode failed (exit $rc); see $out/$mode.log" >&2
    tail -5 "$out/$mode.log" >&2
    exit 1
  fi
  grep -E "val loss" "$out/$mode.log" | tail -1 || true
done
"$build/eco_report" --out "$out" "${dirs[@]}"
if command -v gnuplot >/dev/null 2>&1; then
  n=$(grep -c '^"' "$out/val_loss.dat")
  gnuplot <<GP
set terminal pngcairo size 1000,900 noenhanced
set output "$out/val_loss.png"
set multiplot layout 2,1 title "$name: validation loss by optimizer mode"
set xlabel "step"; set ylabel "validation loss (nats/token)"; set key top right; set grid
# The first evaluation (step 0) is left out: it is ~4 nats above the rest and flattens the curves.
plot for [i=0:$((n - 1))] "$out/val_loss.dat" index i every ::1 using 1:2 with linespoints pt 7 ps 0.5 title columnheader(1)
set ylabel "gap to master (%)"; set key top left
plot for [i=0:$((n - 1))] "$out/val_loss.dat" index i every ::1 using 1:3 with linespoints pt 7 ps 0.5 title columnheader(1)
unset multiplot
set terminal pngcairo size 1000,650 noenhanced
set output "$out/pareto.png"
set title "$name: static memory of the quantized layers vs final validation loss"
set xlabel "static bytes per parameter (weights + master + optimizer states)"; set ylabel "final validation loss"
set offsets 0.5, 0.5, 0.02, 0.02
plot "$out/pareto.dat" using 2:3 with points pt 7 ps 1.5 notitle, "" using 2:3:1 with labels offset 0,1 notitle
GP
  echo "ablate: plots $out/val_loss.png $out/pareto.png"
else
  echo "ablate: gnuplot not found; tools/setup_deps.sh installs it" >&2
fi
echo "ablate: table $out/results.md"
