#!/usr/bin/env python3
"""Share of FP8 weight codes that differ between two checkpoints of the same run.

    tools/code_churn.py EARLIER_CKPT_DIR LATER_CKPT_DIR

Naive round-to-nearest training stalls when updates are smaller than half a grid step: its codes
stop changing. Comparing an early checkpoint (e.g. from `--stop-after 1`) with the final one shows
how much of the quantized model moved at all (docs/numerics.md, "Ablation on the CPU").
"""
import json
import sys
from pathlib import Path


def codes(ckpt: Path) -> bytes:
    manifest = ckpt / "manifest.json"
    if not manifest.is_file():
        sys.exit(f"code_churn: {ckpt}: no manifest.json (not a checkpoint directory)")
    sizes = {f["name"]: f["bytes"] for f in json.loads(manifest.read_text())["files"]}
    if "codes.bin" not in sizes:
        sys.exit(f"code_churn: {ckpt}: no quantized weights (an fp32 or bf16 run?)")
    data = (ckpt / "codes.bin").read_bytes()
    if len(data) != sizes["codes.bin"]:
        sys.exit(f"code_churn: {ckpt}/codes.bin: {len(data)} bytes, manifest says {sizes['codes.bin']}")
    return data


def main() -> None:
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    a, b = codes(Path(sys.argv[1])), codes(Path(sys.argv[2]))
    if len(a) != len(b):
        sys.exit(f"code_churn: the checkpoints hold {len(a)} and {len(b)} codes: not the same model")
    same = sum(x == y for x, y in zip(a, b))
    print(f"{len(a)} codes: {100.0 * same / len(a):.1f}% unchanged, {100.0 * (len(a) - same) / len(a):.1f}% changed")


if __name__ == "__main__":
    main()
