#!/usr/bin/env bash
# Runs one config in every optimizer mode with the same seed and data order, then writes
# OUT/results.md (the ablation table) and OUT/val_loss.png, OUT/pareto.png.
#   tools/ablate.sh CONFIG [--out DIR] [--modes "master naive sr eco eco_sr"] [--build DIR] [--resume]
#                   [--seeds N] [--ref MODE] [--jobs J] [eco_train args...]
# --resume continues an interrupted ablation: finished (or diverged) runs are kept, the others resume
# from their newest checkpoint (or start if they have none). Without --resume, earlier runs in OUT are
# replaced.
# --seeds N (default 1: one run per mode at the config's train.seed, in OUT/MODE) runs every mode at
# train.seed = 1..N (OUT/seedS/MODE; the same seeds in every mode) and reports each mode's mean
# final loss and its paired gap to --ref (default master) with 95% t intervals (tools/ablate_stats.py).
# --jobs J runs J trainings at once (default 1); give each --set train.threads=K with J*K <= cores.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
[[ $# -ge 1 && $1 != -* ]] || { sed -n '2,12p' "$0"; exit 2; }
config=$1; shift
name=$(basename "$config" .json)
out="runs/ablate/$name"
modes="fp32 bf16 bf16_sr master master_sr naive sr eco eco_sr"
build=${ECO_BUILD:-$root/build}
extra=()
resume=0
resume_flag=(--overwrite)  # a fresh ablation replaces an earlier one in the same OUT
seeds=1
ref=master
jobs=1
while [[ $# -gt 0 ]]; do
  case $1 in
    --out) out=$2; shift 2 ;;
    --modes) modes=$2; shift 2 ;;
    --build) build=$2; shift 2 ;;
    --resume) resume=1; resume_flag=(--resume); shift ;;
    --seeds) seeds=$2; shift 2 ;;
    --ref) ref=$2; shift 2 ;;
    --jobs) jobs=$2; shift 2 ;;
    *) extra+=("$1"); shift ;;
  esac
done
[[ $seeds =~ ^[1-9][0-9]*$ ]] || { echo "ablate: --seeds expects a positive integer, got '$seeds'" >&2; exit 2; }
[[ $jobs =~ ^[1-9][0-9]*$ ]] || { echo "ablate: --jobs expects a positive integer, got '$jobs'" >&2; exit 2; }
if [[ $seeds -gt 1 ]]; then
  [[ " $modes " == *" $ref "* ]] || { echo "ablate: --ref $ref is not one of --modes \"$modes\"" >&2; exit 2; }
  command -v python3 >/dev/null 2>&1 || { echo "ablate: --seeds needs python3 (apt-get install python3-minimal)" >&2; exit 2; }
fi
mkdir -p "$out"
status=$(mktemp -d)
trap 'rm -rf "$status"' EXIT

# One training: INDEX RUN_DIR LOG LABEL [eco_train args...]. Writes its verdict to $status/INDEX.
run_one() {
  local key=$status/$1 dir=$2 log=$3 label=$4; shift 4
  # A diverged run is finished too: resuming it would only diverge again.
  if [[ $resume -eq 1 ]] && grep -qE "info done:|training diverged" "$log" 2>/dev/null; then
    echo "=== ablate: $name, $label: finished earlier, kept ==="
    echo ok > "$key"
    return
  fi
  echo "=== ablate: $name, $label ==="
  local rc=0
  [[ $resume -eq 1 ]] || : > "$log"  # a resumed run appends to its earlier log
  "$build/eco_train" --config "$config" --out "$dir" "${resume_flag[@]}" "$@" >> "$log" 2>&1 || rc=$?
  # Exit code 5 = diverged: an expected outcome for `naive`, still part of the table.
  if [[ $rc -ne 0 && $rc -ne 5 ]]; then
    { echo "ablate: $label failed (exit $rc); see $log"; tail -5 "$log"; } >&2
    echo failed > "$key"
    return
  fi
  echo "$label: $(grep -E "val loss" "$log" | tail -1 || true)"
  echo ok > "$key"
}

# The runs, seed by seed, so that an interrupted ablation already holds complete pairs.
labels=() dirs=() logs=() seed_args=()
for ((s = 1; s <= seeds; s++)); do
  for mode in $modes; do
    if [[ $seeds -eq 1 ]]; then
      labels+=("mode $mode") dirs+=("$out/$mode") logs+=("$out/$mode.log") seed_args+=("")
    else
      mkdir -p "$out/seed$s"
      labels+=("mode $mode, seed $s") dirs+=("$out/seed$s/$mode") logs+=("$out/seed$s/$mode.log")
      seed_args+=("--set train.seed=$s")
    fi
  done
done
running=0 failed=0
for i in "${!labels[@]}"; do
  mode=${dirs[$i]##*/}
  # extra args come before the seed so that --seeds decides train.seed even if extra sets it.
  args=(--set optim.mode="$mode" "${extra[@]}")
  [[ -z ${seed_args[$i]} ]] || args+=(${seed_args[$i]})
  if [[ $jobs -eq 1 ]]; then
    run_one "$i" "${dirs[$i]}" "${logs[$i]}" "${labels[$i]}" "${args[@]}"
    [[ $(cat "$status/$i") == ok ]] || exit 1
    continue
  fi
  run_one "$i" "${dirs[$i]}" "${logs[$i]}" "${labels[$i]}" "${args[@]}" &
  running=$((running + 1))
  if [[ $running -ge $jobs ]]; then
    wait -n || true
    running=$((running - 1))
    grep -qx failed "$status"/* 2>/dev/null && { failed=1; break; }
  fi
done
wait
grep -qx failed "$status"/* 2>/dev/null && failed=1
[[ $failed -eq 0 ]] || { echo "ablate: a run failed (above); fix it and rerun with --resume" >&2; exit 1; }

if [[ $seeds -eq 1 ]]; then
  "$build/eco_report" --out "$out" "${dirs[@]}"
else
  for ((s = 1; s <= seeds; s++)); do  # per seed: the single-seed table and curves in OUT/seedS
    seed_dirs=()
    for mode in $modes; do seed_dirs+=("$out/seed$s/$mode"); done
    "$build/eco_report" --out "$out/seed$s" "${seed_dirs[@]}" > /dev/null
  done
  python3 "$root/tools/ablate_stats.py" --out "$out" --modes "$modes" --seeds "$seeds" --ref "$ref"
fi
plotted=1
if ! command -v gnuplot >/dev/null 2>&1; then
  plotted=0
  echo "ablate: gnuplot not found; tools/setup_deps.sh installs it" >&2
elif [[ $seeds -eq 1 ]]; then
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
else
  n=$(grep -c '^"' "$out/val_loss_stats.dat")
  gnuplot <<GP
set terminal pngcairo size 1000,1250 noenhanced
set output "$out/val_loss.png"
set multiplot layout 3,1 title "$name: validation loss by optimizer mode, mean of seeds 1..$seeds with 95% intervals"
stats "$out/val_loss_stats.dat" using 1 nooutput
dx = STATS_max * 0.004  # modes side by side at each evaluation, so their bars do not hide each other
set xlabel "step"; set ylabel "validation loss (nats/token)"; set key top right; set grid
# The first evaluation (step 0) is left out: it is ~4 nats above the rest and flattens the curves.
plot for [i=0:$((n - 1))] "$out/val_loss_stats.dat" index i every ::1 using (\$1+(i-$n/2.0)*dx):2:3 with yerrorlines pt 7 ps 0.5 title columnheader(1)
set ylabel "paired gap to $ref (%)"; set key top left
plot for [i=0:$((n - 1))] "$out/val_loss_stats.dat" index i every ::1 using (\$1+(i-$n/2.0)*dx):4:5 with yerrorlines pt 7 ps 0.5 title columnheader(1)
set xlabel "mode"; set ylabel "final paired gap to $ref (%)"; unset key
set xrange [-0.5:$n - 0.5]; set offsets 0, 0, graph 0.05, graph 0.05
plot "$out/final_gap.dat" using 1:3:4:xticlabels(2) with yerrorbars pt 7 ps 1.5 lw 2, 0 with lines lc rgb "gray" notitle
unset multiplot
set terminal pngcairo size 1000,650 noenhanced
set output "$out/pareto.png"
set title "$name: static memory of the quantized layers vs final validation loss (mean, 95% interval)"
set xlabel "static bytes per parameter (weights + master + optimizer states)"; set ylabel "final validation loss"
set offsets 0.5, 0.5, 0.02, 0.02
plot "$out/pareto_stats.dat" using 2:3:4 with yerrorbars pt 7 ps 1.5 notitle, "" using 2:3:1 with labels offset 3,0 notitle
GP
fi
[[ $plotted -eq 0 ]] || echo "ablate: plots $out/val_loss.png $out/pareto.png"
echo "ablate: table $out/results.md"
