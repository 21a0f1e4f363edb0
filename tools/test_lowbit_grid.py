#!/usr/bin/env python3
"""Tests of tools/lowbit_grid.py against a stub eco_train (no training): cells, frontier, table,
failed and diverged runs, --resume.   python3 tools/test_lowbit_grid.py"""
import json
import os
import subprocess
import sys
import tempfile
import unittest
from pathlib import Path

TOOLS = Path(__file__).resolve().parent
sys.path.insert(0, str(TOOLS))
import lowbit_grid as grid  # noqa: E402

# A stand-in for eco_train: writes config.json and metrics.jsonl like the trainer, with a loss and a
# memory record made up from the grid keys; "int2" fails (exit 3), "naive" diverges at seed 2 (exit 5).
STUB = f"#!{sys.executable}\n" + r'''import json, sys, pathlib
kv = dict(a.split("=", 1) for a in sys.argv[1:] if "=" in a)
w, s, m = kv.get("optim.weight_format", "e4m3"), kv["optim.state_format"], kv["optim.mode"]
seed, out = int(kv["train.seed"]), pathlib.Path(kv["log.dir"])
calls = pathlib.Path(sys.argv[0]).with_name("calls.txt")
calls.open("a").write(f"{w}/{s}/{m}/{seed} {'--resume' in sys.argv}\n")
if w == "int2":
    print("config error: int2 refused by the stub"); sys.exit(3)
out.mkdir(parents=True, exist_ok=True)
(out / "config.json").write_text(json.dumps({"train": {"steps": 10}}))
wb = {"e4m3": 1.0, "int4": 0.5, "fp32": 4.0}[w if m != "fp32" else "fp32"]
sb = {"fp32": 8.0, "solo4": 1.0}[s]
master = 4.0 if m == "master" else 0.0
loss = 2.0 + {"master": 0.0, "eco_sr": 0.01, "sr": 0.05, "naive": 0.3, "fp32": -0.015}[m] + (0.1 if w == "int4" else 0) \
       + (0.02 if s == "solo4" else 0) + 0.01 * seed
recs = [{"memory": {"quantized_bytes_per_param": wb + sb + master, "bytes_per_param": wb + sb + master + 0.5}, "step": 0},
        {"step": 0, "val_loss": 5.5}, {"step": 2, "tokens_per_s": 1000.0}, {"step": 3, "tokens_per_s": 3000.0}]
if m == "naive" and seed == 2:
    (out / "metrics.jsonl").write_text("\n".join(map(json.dumps, recs)) + "\n")
    print("error: training diverged: 6 consecutive non-finite steps"); sys.exit(5)
recs.append({"step": 10, "val_loss": loss})
(out / "metrics.jsonl").write_text("\n".join(map(json.dumps, recs)) + "\n")
'''


class Units(unittest.TestCase):
    def test_pareto(self):
        pts = {"a": (2.0, 3.0), "b": (3.0, 2.5), "c": (3.0, 2.9), "d": (5.0, 2.6), "e": (9.0, 2.0), "f": (2.0, 3.1)}
        self.assertEqual(grid.pareto(pts), ["a", "b", "e"])  # c, f: same bytes, more loss; d: b beats it

    def test_cells_fixed_weight_modes_once_per_state(self):
        cells, notes = grid.make_cells(["e4m3", "int4"], ["fp32", "solo4"], ["fp32", "master", "bf16"])
        names = [c.name for c in cells]
        self.assertEqual(names[:4], ["fp32/fp32/fp32", "fp32/solo4/fp32", "bf16/fp32/bf16", "bf16/solo4/bf16"])
        self.assertEqual(len(names), 4 + 2 * 2)
        self.assertEqual(len(notes), 2)
        self.assertNotIn("optim.weight_format=fp32", " ".join(cells[0].grid_args()))


class EndToEnd(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory()
        self.d = Path(self.tmp.name)
        (self.d / "build").mkdir()
        stub = self.d / "build" / "eco_train"
        stub.write_text(STUB)
        stub.chmod(0o755)
        (self.d / "cfg.json").write_text("{}")

    def tearDown(self):
        self.tmp.cleanup()

    def grid(self, *extra, weights="e4m3 int4 int2", modes="fp32 master eco_sr naive"):
        cmd = [sys.executable, str(TOOLS / "lowbit_grid.py"), str(self.d / "cfg.json"), "--build", str(self.d / "build"),
               "--out", str(self.d / "out"), "--weights", weights, "--states", "fp32 solo4", "--modes", modes,
               "--seeds", "3", "--jobs", "2", *extra]
        env = dict(os.environ, PATH="/nonexistent-no-gnuplot")  # the table must not need gnuplot (the stub's
        # shebang names the python binary, so it does not need PATH either)
        return subprocess.run(cmd, capture_output=True, text=True, env=env)

    def test_grid_table_failures_and_resume(self):
        r = self.grid()
        self.assertEqual(r.returncode, 1, r.stderr)  # the int2 runs failed
        self.assertIn("gnuplot not found", r.stderr)
        self.assertIn("int2/fp32/master seed 1", r.stderr)
        self.assertIn(str(self.d / "out" / "int2_fp32" / "seed1" / "master.log"), r.stderr)
        md = (self.d / "out" / "grid.md").read_text()
        row = {line.split("`")[1]: line for line in md.splitlines() if line.startswith("| `") and "±" in line}
        # 3 seeds: losses 2.01, 2.02, 2.03 (+ offsets): mean ± t(0.975, 2) · 0.01 / sqrt(3) = ± 0.0248
        self.assertIn("| 3/3 | 2.0200 ± 0.0248 | (reference) |", row["e4m3/fp32/master"])
        self.assertIn("| 13.000 | 13.500 | 2000 |", row["e4m3/fp32/master"])
        self.assertIn("+0.50 ± 0.01%", row["e4m3/fp32/eco_sr"])  # paired: the seed offset cancels (almost)
        self.assertIn("yes: worse", row["e4m3/fp32/eco_sr"])
        self.assertIn("2/3 (1 diverged)", row["e4m3/fp32/naive"])
        self.assertIn("| fp32/fp32/fp32 |", md.replace("`", ""))
        self.assertEqual(md.count("fp32/fp32/fp32` |"), 3)  # summary, frontier, per-seed table: once, not per weight
        failed_row = [line for line in md.splitlines() if line.startswith("| `int2/solo4/eco_sr` | 0/3")]
        self.assertEqual(len(failed_row), 1)
        self.assertIn("0/3 (3 failed)", failed_row[0])
        front = md.split("Pareto frontier")[1].split("Final validation")[0]
        self.assertEqual([ln.split("`")[1] for ln in front.splitlines() if ln.startswith("| `")],
                         ["int4/solo4/eco_sr", "e4m3/solo4/eco_sr", "fp32/solo4/fp32", "fp32/fp32/fp32"])
        dat = (self.d / "out" / "frontier.dat").read_text()
        self.assertIn('"fp32/fp32/fp32" 12.0000 2.005000', dat)
        # --resume: finished and diverged runs kept, only the failed ones rerun (with --resume).
        calls = self.d / "build" / "calls.txt"
        calls.unlink()
        r = self.grid("--resume")
        self.assertEqual(r.returncode, 1)
        rerun = calls.read_text().split("\n")[:-1]
        self.assertEqual(len(rerun), 2 * 3 * 3)  # int2: 2 states x 3 modes (not fp32: no weight format) x 3 seeds
        self.assertTrue(all(line.startswith("int2/") and line.endswith("True") for line in rerun), rerun)

    def test_refusals(self):
        r = self.grid("--set", "optim.mode=sr")
        self.assertEqual(r.returncode, 2)
        self.assertIn("set by the grid itself", r.stderr)
        r = self.grid("--ref", "int8/fp32/master")
        self.assertEqual(r.returncode, 2)
        self.assertIn("not a cell of this grid", r.stderr)


if __name__ == "__main__":
    unittest.main()
