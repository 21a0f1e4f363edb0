#!/usr/bin/env bash
# One command on a fresh Debian machine: install dependencies, fetch the default corpus and the
# GPT-2 tokenizer, build, and train the embedded default config (configs/tiny_cpu.json) on the CPU.
# Extra arguments go to eco_train, e.g. tools/quickstart.sh --set train.steps=100
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
tools/setup_deps.sh
tools/build.sh
ECO_PREPARE="$root/build/eco_prepare" tools/fetch_data.sh --tiny-only
# A rerun starts the demo afresh (--overwrite) unless asked to continue it (--resume).
fresh=(--overwrite)
for a in "$@"; do [[ $a == --resume ]] && fresh=(); done
exec build/eco_train --config configs/tiny_cpu.json --out runs/tiny_cpu "${fresh[@]}" "$@"
