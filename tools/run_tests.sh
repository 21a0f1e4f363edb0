#!/usr/bin/env bash
# One command on a fresh Debian machine: install dependencies, fetch the corpora, tokenizer and
# the tokenizer oracle, build, and run the whole test suite with ctest.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
tools/setup_deps.sh
tools/build.sh
ECO_PREPARE="$root/build/eco_prepare" tools/fetch_data.sh
cd build
ctest --output-on-failure -j"$(nproc)" "$@"
