#!/usr/bin/env bash
# Writes byte-tokenized shards (vocab 256, document separator = byte 0) of the corpora that
# tools/fetch_data.sh downloads, for the configs/lowbit_byte_*.json family (idempotent: an existing
# shard is kept; delete it to redo it).
#
#   tools/prepare_byte_data.sh [--eco-prepare PATH]
#
# Reads $ECO_DATA/corpus/{tiny,large}/{train,val} (run tools/fetch_data.sh first) and writes
# $ECO_DATA/bytes/{tiny,large}/{train,val}.bin ($ECO_DATA defaults to <repo>/data, git-ignored).
# The large corpus is ~24 M training bytes = tokens: enough for 100 tokens per parameter at a few
# hundred thousand parameters, which a byte-level model of that size can use.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
data=${ECO_DATA:-$root/data}
eco_prepare=${ECO_PREPARE:-$root/build/eco_prepare}
while (($#)); do
  case $1 in
    --eco-prepare) eco_prepare=${2:?--eco-prepare needs a path}; shift 2 ;;
    -h | --help) sed -n '2,11p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "prepare_byte_data: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
done
[[ -x $eco_prepare ]] || { echo "prepare_byte_data: $eco_prepare not found; build it (cmake --build build --target eco_prepare)" >&2; exit 1; }
for corpus in tiny large; do
  for split in train val; do
    in=$data/corpus/$corpus/$split
    out=$data/bytes/$corpus/$split
    if [[ -s $out.bin ]]; then echo "prepare_byte_data: $out.bin exists, kept"; continue; fi
    [[ -d $in ]] || { echo "prepare_byte_data: $in missing; run tools/fetch_data.sh first" >&2; exit 1; }
    mkdir -p "$(dirname "$out")"
    "$eco_prepare" --tokenizer byte --out "$out" "$in"
  done
done
