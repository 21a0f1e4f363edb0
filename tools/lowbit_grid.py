#!/usr/bin/env python3
"""Grid runner: weight format x optimizer-state format x optim.mode on one config, every cell at
train.seed = 1..N, then the table and the static-memory vs validation-loss frontier (issue 11 §3).

    tools/lowbit_grid.py CONFIG --weights "e4m3 int4 ternary" --states "fp32 m8v4 solo4"
        --modes "master sr eco_sr" --seeds N [--ref e4m3/fp32/master] [--jobs J] [--out DIR]
        [--build DIR] [--resume] [--set key=value ...]

Each run is DIR/W_S/seedK/M (its eco_train output in DIR/W_S/seedK/M.log). Cells are named
W/S/M. Modes whose weights are not in optim.weight_format (fp32: fp32 weights; bf16, bf16_sr: bf16
weights) run once per state format, as cells fp32/S/fp32 and bf16/S/M, not once per weight format.
--resume keeps every run whose metrics.jsonl holds the final step's val_loss (and every run that
diverged) and resumes the others; without it, earlier runs in DIR are replaced (--overwrite).

Writes DIR/grid.md (the table and the Pareto frontier), DIR/frontier.dat and DIR/frontier.png
(gnuplot). The statistics are tools/ablate_stats.py's: mean ± 95% Student t interval over the seeds,
the gap to --ref paired per seed, a diverged run counted and left out of means and pairs. Exit
status 1 if any run failed (the table is still written from the others). Standard library only.
"""
import argparse
import concurrent.futures
import json
import math
import shutil
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import ablate_stats as st  # noqa: E402  (mean_ci, read_run, fmt, pm)

ROOT = Path(__file__).resolve().parent.parent
GRID_KEYS = ("optim.weight_format", "optim.state_format", "optim.mode", "train.seed", "log.dir")
# Modes whose stored weights do not come from optim.weight_format (WeightOptimizer: fp32 mode keeps
# fp32 weights, bf16 / bf16_sr store bf16); their optimizer states still follow optim.state_format.
FIXED_WEIGHTS = {"fp32": "fp32", "bf16": "bf16", "bf16_sr": "bf16"}


class Cell:
    def __init__(self, weight, state, mode):
        self.weight, self.state, self.mode = weight, state, mode
        self.name = f"{weight}/{state}/{mode}"

    def run_dir(self, out: Path, seed: int) -> Path:
        return out / f"{self.weight}_{self.state}" / f"seed{seed}" / self.mode

    def grid_args(self):
        args = [] if self.mode in FIXED_WEIGHTS else ["--set", f"optim.weight_format={self.weight}"]
        return args + ["--set", f"optim.state_format={self.state}", "--set", f"optim.mode={self.mode}"]


def make_cells(weights, states, modes):
    """The cells in grid order, and a note per skipped combination."""
    cells, notes = [], []
    for m in modes:
        if m in FIXED_WEIGHTS and len(weights) > 1:
            notes.append(f"mode {m} stores {FIXED_WEIGHTS[m]} weights whatever optim.weight_format says: "
                         f"run once per state format (cells {FIXED_WEIGHTS[m]}/S/{m}), not for each of "
                         f"{' '.join(weights)}")
    for m in modes:  # the weight-independent modes first: they are the baselines
        if m in FIXED_WEIGHTS:
            cells += [Cell(FIXED_WEIGHTS[m], s, m) for s in states]
    for w in weights:
        for s in states:
            cells += [Cell(w, s, m) for m in modes if m not in FIXED_WEIGHTS]
    return cells, notes


def hms(seconds: float) -> str:
    s = int(round(seconds))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


def final_step_logged(run: Path):
    """True if metrics.jsonl holds the val_loss of the run's last step (config.json's train.steps)."""
    try:
        steps = json.loads((run / "config.json").read_text())["train"]["steps"]
        text = (run / "metrics.jsonl").read_text()
    except (OSError, ValueError, KeyError):
        return False
    for line in text.splitlines():
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(rec, dict) and rec.get("step") == steps and "val_loss" in rec:
            return True
    return False


def diverged_in_log(log: Path) -> bool:
    try:
        return "training diverged" in log.read_text(errors="replace")
    except OSError:
        return False


def read_cell_run(run: Path):
    """{final, bpp_q, bpp_all, tok_s} of one run, or None if it never wrote its metrics."""
    if not (run / "config.json").is_file() or not (run / "metrics.jsonl").is_file():
        return None
    _, final, bpp_q = st.read_run(run)
    bpp_all, rates = math.nan, []
    for line in (run / "metrics.jsonl").read_text().splitlines():
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue
        if not isinstance(rec, dict):
            continue
        mem = rec.get("memory")
        if isinstance(mem, dict) and mem.get("bytes_per_param") is not None:
            bpp_all = float(mem["bytes_per_param"])
        if rec.get("tokens_per_s") is not None and rec.get("step", 0) > 1:  # step 1 includes warm-up
            rates.append(float(rec["tokens_per_s"]))
    # The median step rate: a resumed run's first step and a busy machine's stalls do not move it.
    return {"final": final, "bpp_q": bpp_q, "bpp_all": bpp_all,
            "tok_s": statistics.median(rates) if rates else math.nan}


def run_grid(a, cells, seeds):
    """Runs (or keeps) every (cell, seed); returns {(cell name, seed): 'ok'|'kept'|'diverged'|'failed'}."""
    jobs = [(c, s) for s in seeds for c in cells]  # seed by seed: an interrupted grid holds whole pairs
    status, todo = {}, []
    for c, s in jobs:
        run = c.run_dir(a.out, s)
        if a.resume and (final_step_logged(run) or diverged_in_log(run.with_suffix(".log"))):
            status[(c.name, s)] = "kept"
        else:
            todo.append((c, s))
    n_kept = len(jobs) - len(todo)
    print(f"lowbit_grid: {len(cells)} cells x {len(seeds)} seeds = {len(jobs)} runs"
          + (f", {n_kept} finished earlier (kept)" if n_kept else "") + f", {len(todo)} to run, {a.jobs} at a time",
          flush=True)
    lock, t0, done = threading.Lock(), time.monotonic(), [0]

    def one(c, s):
        run = c.run_dir(a.out, s)
        log = run.with_suffix(".log")
        run.parent.mkdir(parents=True, exist_ok=True)
        cmd = [str(a.build / "eco_train"), "--config", str(a.config), *a.extra, *c.grid_args(),
               "--set", f"train.seed={s}", "--set", f"log.dir={run}", "--resume" if a.resume else "--overwrite"]
        with open(log, "a" if a.resume else "w") as f:  # a resumed run appends to its earlier log
            f.write("$ " + " ".join(cmd) + "\n")
            f.flush()
            rc = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT).returncode
        # Exit 5 = diverged: an outcome of the method (e.g. naive), not a failure of the run.
        verdict = "ok" if rc == 0 else "diverged" if rc == 5 else "failed"
        with lock:
            done[0] += 1
            k, el = done[0], time.monotonic() - t0
            eta = el / k * (len(todo) - k)
            res = read_cell_run(run) if verdict != "failed" else None
            what = (f"val loss {st.fmt(res['final'])}" if res and verdict == "ok"
                    else verdict if verdict == "diverged" else f"FAILED (exit {rc}), see {log}")
            print(f"[{n_kept + k}/{len(jobs)}] {c.name} seed {s}: {what} | elapsed {hms(el)}, ETA {hms(eta)}",
                  flush=True)
            if verdict == "failed":
                tail = log.read_text(errors="replace").splitlines()[-3:]
                print("\n".join("    " + t for t in tail), file=sys.stderr, flush=True)
        return verdict

    with concurrent.futures.ThreadPoolExecutor(max_workers=a.jobs) as pool:
        futures = {pool.submit(one, c, s): (c, s) for c, s in todo}
        for fut in concurrent.futures.as_completed(futures):
            c, s = futures[fut]
            status[(c.name, s)] = fut.result()
    return status


def pareto(points):
    """Names of the points {name: (bytes, loss)} that no other point beats: none has at most the bytes
    and at most the loss with one of them strictly smaller. Sorted by bytes."""
    front = [n for n, (b, l) in points.items()
             if not any((b2 <= b and l2 <= l and (b2 < b or l2 < l)) for n2, (b2, l2) in points.items() if n2 != n)]
    return sorted(front, key=lambda n: points[n])


def aggregate(a, cells, seeds, status):
    runs = {(c.name, s): read_cell_run(c.run_dir(a.out, s)) if status.get((c.name, s)) != "failed" else None
            for c in cells for s in seeds}

    def final(name, s):
        r = runs[(name, s)]
        return r["final"] if r else math.nan

    def first(name, key):
        return next((runs[(name, s)][key] for s in seeds if runs[(name, s)] and math.isfinite(runs[(name, s)][key])),
                    math.nan)

    rows, per_seed, stats = [], [], {}
    for c in cells:
        fin = [final(c.name, s) for s in seeds]
        failed = sum(status.get((c.name, s)) == "failed" or runs[(c.name, s)] is None for s in seeds)
        diverged = sum(runs[(c.name, s)] is not None and not math.isfinite(x) for s, x in zip(seeds, fin))
        mean, half, _ = st.mean_ci(fin)
        pairs = [(x, final(a.ref, s)) for x, s in zip(fin, seeds)]
        d_pct = st.mean_ci([100.0 * (x - r) / r for x, r in pairs if math.isfinite(x) and math.isfinite(r)])
        if c.name == a.ref:
            gap, verdict = "(reference)", "—"
        else:
            gap = st.pm(d_pct[0], d_pct[1], ".2f", True) + ("%" if math.isfinite(d_pct[0]) else "")
            verdict = st.gap_verdict(d_pct)
        bpp_q, bpp_all = first(c.name, "bpp_q"), first(c.name, "bpp_all")
        tok = st.mean_ci([runs[(c.name, s)]["tok_s"] if runs[(c.name, s)] else math.nan for s in seeds])[0]
        stats[c.name] = (bpp_q, bpp_all, mean, half)
        n_ok = len(seeds) - failed - diverged
        notes = ", ".join(f"{n} {w}" for n, w in ((diverged, "diverged"), (failed, "failed")) if n)
        rows.append(f"| `{c.name}` | {n_ok}/{len(seeds)}{' (' + notes + ')' if notes else ''} | {st.pm(mean, half)} | "
                    f"{gap} | {verdict} | {st.fmt(bpp_q, '.3f')} | {st.fmt(bpp_all, '.3f')} | {st.fmt(tok, '.0f')} |")
        per_seed.append(f"| `{c.name}` | " + " | ".join(
            "failed" if runs[(c.name, s)] is None else "diverged" if not math.isfinite(x) else f"{x:.4f}"
            for s, x in zip(seeds, fin)) + " |")

    points = {n: (b, m) for n, (b, _, m, _) in stats.items() if math.isfinite(b) and math.isfinite(m)}
    front = pareto(points)
    md = [f"# Low-bit grid: {a.config}", "",
          f"Seeds {seeds[0]}..{seeds[-1]} (train.seed, the same in every cell); cell = weight format / state "
          f"format / optim.mode. Intervals: 95%, Student t over the seeds. Gap: paired per seed, "
          f"(cell − ref) / ref with ref `{a.ref}`. Static B/param from the step-0 memory record "
          f"(weights + scales + master + m + v), for the quantized layers and for the whole model; "
          f"tokens/s: median step rate, mean over the seeds.", ""]
    if a.extra:
        md += ["Extra settings: `" + " ".join(a.extra) + "`", ""]
    md += [*(f"- {n}" for n in a.notes), *([""] if a.notes else []),
           f"| cell | finished | final val loss (mean ± 95%) | gap to `{a.ref}` (paired) | interval excludes 0 | "
           "static B/param (quantized layers) | static B/param (model) | tokens/s |",
           "|---|---|---|---|---|---|---|---|", *rows, "",
           "Pareto frontier (static B/param of the quantized layers vs mean final val loss; no other cell has at "
           "most the bytes and at most the loss, one of them strictly less), fewest bytes first:", "",
           "| cell | static B/param (quantized layers) | final val loss (mean) |", "|---|---|---|",
           *(f"| `{n}` | {points[n][0]:.3f} | {points[n][1]:.4f} |" for n in front), "",
           "Final validation loss of every run:", "",
           "| cell | " + " | ".join(f"seed {s}" for s in seeds) + " |", "|---|" + "---|" * len(seeds), *per_seed, ""]
    (a.out / "grid.md").write_text("\n".join(md))
    # frontier.dat: block 0 every plotted cell (label, B/param quantized, mean loss, 95% half-width,
    # B/param model, on the frontier 0/1); block 1 the frontier, fewest bytes first; block 2 its
    # staircase: the frontier carried on to the largest cell's bytes (more memory buys at least it).
    dat = ["# cell bpp_quantized mean_final_val_loss half_width_95 bpp_model on_frontier"]
    dat += [f'"{n}" {b:.4f} {m:.6f} {h if math.isfinite(h) else 0:.6f} {stats[n][1]:.4f} {int(n in front)}'
            for n, (b, _, m, h) in stats.items() if n in points]
    dat += ["", "", "# frontier"] + [f'"{n}" {points[n][0]:.4f} {points[n][1]:.6f}' for n in front]
    if front:
        dat += ["", "", "# staircase"] + [f'"{n}" {points[n][0]:.4f} {points[n][1]:.6f}' for n in front]
        dat.append(f'"" {max(b for b, _ in points.values()):.4f} {points[front[-1]][1]:.6f}')
    (a.out / "frontier.dat").write_text("\n".join(dat) + "\n")
    print("\n".join(md))
    return len(points)


def plot(a, n_points):
    png = a.out / "frontier.png"
    if not shutil.which("gnuplot"):
        print("lowbit_grid: gnuplot not found, no frontier.png (tools/setup_deps.sh installs it); "
              f"the data is in {a.out / 'frontier.dat'}", file=sys.stderr)
        return
    if n_points == 0:
        print("lowbit_grid: no cell has a finite loss and a memory record; nothing to plot", file=sys.stderr)
        return
    dat, out_png = (str(p).replace('"', '\\"') for p in (a.out / "frontier.dat", png))
    script = f"""
set terminal pngcairo size 1100,750 noenhanced
set output "{out_png}"
set title "{a.config.stem}: static memory vs final validation loss (mean of {a.seeds} seeds, 95% intervals)"
set xlabel "static bytes per parameter of the quantized layers (weights + scales + master + m + v)"
set ylabel "final validation loss (nats/token)"
set grid; set key top right; set offsets graph 0.05, graph 0.25, graph 0.06, graph 0.06
plot "{dat}" index 2 using 2:3 with steps lw 2 lc rgb "#d62728" title "Pareto frontier (means)", \\
     "{dat}" index 1 using 2:3 with points pt 6 ps 2.2 lw 2 lc rgb "#d62728" notitle, \\
     "{dat}" index 0 using 2:3:4 with yerrorbars pt 7 ps 1.2 lc rgb "#1f77b4" title "cell (mean ± 95%)", \\
     "{dat}" index 0 using 2:3:1 with labels left offset 0.8,0.6 font ",8" notitle
"""
    r = subprocess.run(["gnuplot"], input=script, text=True, capture_output=True)
    if r.returncode != 0:
        print(f"lowbit_grid: gnuplot failed:\n{r.stderr}", file=sys.stderr)
    else:
        print(f"lowbit_grid: plot {png}")


def parse_args():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split("\n\n", 2)[2])
    ap.add_argument("config", type=Path)
    ap.add_argument("--weights", required=True, help='optim.weight_format values, e.g. "e4m3 int4 ternary"')
    ap.add_argument("--states", required=True, help='optim.state_format values, e.g. "fp32 m8v4 solo4"')
    ap.add_argument("--modes", required=True, help='optim.mode values, e.g. "master sr eco_sr"')
    ap.add_argument("--seeds", required=True, type=int, help="runs every cell at train.seed = 1..N")
    ap.add_argument("--ref", default="e4m3/fp32/master", help="the cell the paired gaps are taken to")
    ap.add_argument("--jobs", type=int, default=1, help="trainings at once (give each --set train.threads=K, J*K <= cores)")
    ap.add_argument("--out", type=Path, help="default runs/grid/<config name>")
    ap.add_argument("--build", type=Path, default=ROOT / "build", help="the folder holding eco_train")
    ap.add_argument("--resume", action="store_true", help="keep finished runs, resume the others")
    ap.add_argument("--set", dest="extra", action="append", default=[], metavar="KEY=VALUE",
                    help="passed to every run (not the grid's own keys)")
    a = ap.parse_args()
    if a.seeds < 1 or a.jobs < 1:
        ap.error("--seeds and --jobs must be positive integers")
    for kv in a.extra:
        if kv.split("=", 1)[0] in GRID_KEYS:
            ap.error(f"--set {kv}: {kv.split('=', 1)[0]} is set by the grid itself (--weights/--states/--modes/"
                     "--seeds/--out)")
    a.extra = [x for kv in a.extra for x in ("--set", kv)]
    if not a.config.is_file():
        ap.error(f"config {a.config} not found")
    if not (a.build / "eco_train").is_file():
        ap.error(f"{a.build / 'eco_train'} not found (build it with tools/build.sh, or pass --build DIR)")
    a.config, a.build = a.config.resolve(), a.build.resolve()
    a.out = (a.out or Path("runs") / "grid" / a.config.stem).resolve()
    return ap, a


def main() -> None:
    ap, a = parse_args()
    weights, states, modes = a.weights.split(), a.states.split(), a.modes.split()
    if not weights or not states or not modes:
        ap.error("--weights, --states and --modes each need at least one value")
    cells, a.notes = make_cells(weights, states, modes)
    names = [c.name for c in cells]
    if a.ref not in names:
        ap.error(f"--ref {a.ref} is not a cell of this grid; the cells are: {' '.join(names)}")
    for n in a.notes:
        print(f"lowbit_grid: {n}")
    a.out.mkdir(parents=True, exist_ok=True)
    seeds = list(range(1, a.seeds + 1))
    status = run_grid(a, cells, seeds)
    n_points = aggregate(a, cells, seeds, status)
    plot(a, n_points)
    print(f"lowbit_grid: table {a.out / 'grid.md'}, data {a.out / 'frontier.dat'}")
    failed = sorted((n, s) for (n, s), v in status.items() if v == "failed")
    if failed:
        print(f"lowbit_grid: {len(failed)} of {len(status)} runs failed (left out of the table): "
              + ", ".join(f"{n} seed {s} ({Cell(*n.split('/')).run_dir(a.out, s).with_suffix('.log')})"
                          for n, s in failed) + "; fix and rerun with --resume", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
