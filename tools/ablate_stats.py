#!/usr/bin/env python3
"""Multi-seed ablation statistics: per-mode mean final validation loss with a 95% interval, and the
paired gap of every mode to a reference mode (the same seeds in every mode), as tools/ablate.sh
--seeds N lays the runs out.

    tools/ablate_stats.py --out DIR --modes "master naive sr eco_sr" --seeds N [--ref master]

Reads DIR/seed<S>/<MODE>/{config.json,metrics.jsonl} for S = 1..N and writes
  DIR/results.md            the tables (summary, then every run's final loss)
  DIR/val_loss_stats.dat    per mode (gnuplot blocks): step, mean val loss, 95% half-width,
                            mean paired gap to ref (%), its 95% half-width
  DIR/final_gap.dat         per mode: index, mode, mean paired final gap (%), 95% half-width
  DIR/pareto_stats.dat      per mode: mode, static B/param of the quantized layers, mean final loss, half-width

Why paired: the seed sets the init, the data order and the rounding noise. Those move every mode's
final loss together by about as much as the modes differ, so the per-seed difference to the
reference cancels most of it. The interval of the mean of the differences is the t interval
mean ± t(0.975, n-1) · sd / sqrt(n). A run that diverged (no finite final loss) is counted, left out
of the means, and its seed left out of that mode's paired gaps. Standard library only.
"""
import argparse
import json
import math
import sys
from pathlib import Path


def _betacf(a: float, b: float, x: float) -> float:
    # Continued fraction of the regularized incomplete beta function (modified Lentz).
    tiny = 1e-300
    c, d = 1.0, 1.0 - (a + b) * x / (a + 1.0)
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 400):
        m2 = 2 * m
        for num in (m * (b - m) * x / ((a + m2 - 1) * (a + m2)), -(a + m) * (a + b + m) * x / ((a + m2) * (a + m2 + 1))):
            d = 1.0 + num * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + num / c
            c = c if abs(c) > tiny else tiny
            h *= d * c
        if abs(d * c - 1.0) < 1e-15:
            break
    return h


def _betainc(a: float, b: float, x: float) -> float:
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    front = math.exp(math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x))
    if x < (a + 1.0) / (a + b + 2.0):
        return front * _betacf(a, b, x) / a
    return 1.0 - front * _betacf(b, a, 1.0 - x) / b


def t_cdf(t: float, df: int) -> float:
    tail = 0.5 * _betainc(df / 2.0, 0.5, df / (df + t * t))
    return 1.0 - tail if t >= 0 else tail


def t_quantile(p: float, df: int) -> float:
    """Inverse of t_cdf for p in (0.5, 1) by bisection (t(0.975, 1) = 12.706, (0.975, 4) = 2.776)."""
    lo, hi = 0.0, 1e4
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if t_cdf(mid, df) < p else (lo, mid)
    return 0.5 * (lo + hi)


def mean_ci(xs):
    """(mean, 95% half-width, sample sd) of the finite values; half-width and sd are NaN below 2 values."""
    xs = [x for x in xs if math.isfinite(x)]
    n = len(xs)
    if n == 0:
        return math.nan, math.nan, math.nan
    m = sum(xs) / n
    if n < 2:
        return m, math.nan, math.nan
    sd = math.sqrt(sum((x - m) ** 2 for x in xs) / (n - 1))
    return m, t_quantile(0.975, n - 1) * sd / math.sqrt(n), sd


def read_run(run: Path):
    """(val curve {step: loss}, final loss or NaN, static B/param of the quantized layers or NaN)."""
    cfg_path, metrics_path = run / "config.json", run / "metrics.jsonl"
    if not cfg_path.is_file() or not metrics_path.is_file():
        sys.exit(f"ablate_stats: {run}: no config.json or metrics.jsonl (did the run start?)")
    steps = json.loads(cfg_path.read_text())["train"]["steps"]
    curve, bpp = {}, math.nan
    for line in metrics_path.read_text().splitlines():
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue  # a torn last line of an interrupted run, as eco_report skips it
        if not isinstance(rec, dict):
            continue
        if "val_loss" in rec:
            v = rec["val_loss"]
            curve[int(rec["step"])] = float(v) if v is not None else math.nan
        mem = rec.get("memory")
        if isinstance(mem, dict) and mem.get("quantized_bytes_per_param") is not None:
            bpp = float(mem["quantized_bytes_per_param"])
    final = curve.get(steps, math.nan)
    return curve, final if math.isfinite(final) else math.nan, bpp


def gap_verdict(gap) -> str:
    """Whether a paired gap's interval (mean_ci's mean, half-width, ...) excludes 0, and on which side."""
    mean, half = gap[0], gap[1]
    if not math.isfinite(half):
        return "— (fewer than 2 pairs)"
    if mean - half > 0:
        return "**yes: worse**"
    if mean + half < 0:
        return "**yes: better**"
    return "no"


def fmt(v: float, spec: str = ".4f") -> str:
    return format(v, spec) if math.isfinite(v) else "—"


def pm(m: float, h: float, spec: str = ".4f", sign: bool = False) -> str:
    if not math.isfinite(m):
        return "—"
    s = format(m, ("+" if sign else "") + spec)
    return s + (" ± " + format(h, spec) if math.isfinite(h) else "")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", required=True, type=Path)
    ap.add_argument("--modes", required=True)
    ap.add_argument("--seeds", required=True, type=int)
    ap.add_argument("--ref", default="master")
    a = ap.parse_args()
    modes, seeds = a.modes.split(), list(range(1, a.seeds + 1))
    if a.ref not in modes:
        sys.exit(f"ablate_stats: --ref {a.ref} is not one of the modes ({a.modes})")
    runs = {(m, s): read_run(a.out / f"seed{s}" / m) for m in modes for s in seeds}
    ref_final = {s: runs[(a.ref, s)][1] for s in seeds}

    rows, per_seed, curves, finals, pareto = [], [], [], [], []
    for i, m in enumerate(modes):
        fin = [runs[(m, s)][1] for s in seeds]
        mean, half, sd = mean_ci(fin)
        diverged = sum(not math.isfinite(x) for x in fin)
        pairs = [(x, ref_final[s]) for x, s in zip(fin, seeds) if math.isfinite(x) and math.isfinite(ref_final[s])]
        d_abs = mean_ci([x - r for x, r in pairs])
        d_pct = mean_ci([100.0 * (x - r) / r for x, r in pairs])
        if m == a.ref:
            gap_pct = gap_abs = verdict = "—"
        else:
            gap_pct, gap_abs = pm(d_pct[0], d_pct[1], ".2f", True) + "%", pm(d_abs[0], d_abs[1], ".4f", True)
            verdict = gap_verdict(d_pct)
        bpp = next((runs[(m, s)][2] for s in seeds if math.isfinite(runs[(m, s)][2])), math.nan)
        n_ok = len(seeds) - diverged
        rows.append(f"| `{m}` | {n_ok}/{len(seeds)}{' (' + str(diverged) + ' diverged)' if diverged else ''} | "
                    f"{pm(mean, half)} | {fmt(sd)} | {gap_pct} | {gap_abs} | {verdict} | {fmt(bpp, '.2f')} |")
        per_seed.append(f"| `{m}` | " + " | ".join("diverged" if not math.isfinite(x) else f"{x:.4f}" for x in fin) + " |")
        # Curves: at every evaluation step that all finished seeds of this mode reached.
        ref_curves = [runs[(a.ref, s)][0] for s in seeds]
        mode_curves = [runs[(m, s)][0] for s in seeds]
        block = [f'"{m}"']
        for step in sorted(set().union(*[c.keys() for c in mode_curves])):
            vals = [c.get(step, math.nan) for c in mode_curves]
            vm, vh, _ = mean_ci(vals)
            gaps = [100.0 * (v - rc[step]) / rc[step] for v, rc in zip(vals, ref_curves)
                    if math.isfinite(v) and math.isfinite(rc.get(step, math.nan))]
            gm, gh, _ = mean_ci(gaps)
            if math.isfinite(vm):
                block.append(f"{step} {vm:.6f} {fmt(vh, '.6f').replace('—', 'NaN')} "
                             f"{fmt(gm, '.4f').replace('—', 'NaN')} {fmt(gh, '.4f').replace('—', 'NaN')}")
        curves.append("\n".join(block))
        finals.append(f'{i} "{m}" {fmt(d_pct[0], ".4f").replace("—", "NaN")} {fmt(d_pct[1], ".4f").replace("—", "NaN")}')
        if math.isfinite(mean) and math.isfinite(bpp):
            pareto.append(f'"{m}" {bpp:.4f} {mean:.6f} {fmt(half, ".6f").replace("—", "0")}')

    md = [f"Seeds {seeds[0]}..{seeds[-1]} (train.seed; the same seeds in every mode). Intervals: 95%, Student t over "
          f"the seeds (n − 1 degrees of freedom). Gap: paired per seed, (mode − {a.ref}) / {a.ref}.", "",
          f"| mode | finished | final val loss (mean ± 95%) | seed sd | gap to {a.ref} (paired) | absolute gap | "
          f"interval excludes 0 | static B/param (quantized layers) |",
          "|---|---|---|---|---|---|---|---|", *rows, "",
          "Final validation loss of every run:", "",
          "| mode | " + " | ".join(f"seed {s}" for s in seeds) + " |", "|---|" + "---|" * len(seeds), *per_seed, ""]
    (a.out / "results.md").write_text("\n".join(md))
    (a.out / "val_loss_stats.dat").write_text("\n\n\n".join(curves) + "\n")
    (a.out / "final_gap.dat").write_text("\n".join(finals) + "\n")
    (a.out / "pareto_stats.dat").write_text("\n".join(pareto) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
