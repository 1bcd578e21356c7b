"""Is the DiT's steep tau_mem ∝ N^alpha a property of its width? alpha per width, and where the trend points.

    python docs/studies/dit_width.py STORE [--widen-to 256] [--out docs/figures/dit-width]

For the DiT runs of STORE (one task and depth): tau_mem = a * N^alpha by censored maximum likelihood per width
(every run and seed, censored ones as bounds: the fits `innovwin report` makes), and tau_mem against width at each N
(how much sooner a wider DiT memorizes, and whether that gain grows with N, which is what would flatten alpha).
Where alpha moves with width: alpha(W) = c + d log2 W by least squares weighted by each width's interval (its
half-width / 1.96 taken as a known standard error, so the extrapolation's interval is the normal one of a weighted
regression with known variances), extrapolated to --widen-to. With three widths this is a trend, not a law: the
interval says how far it can be trusted. Writes ``<out>.json``, ``<out>.md`` and ``<out>.png``.
"""
from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import numpy as np

from innovwin.analysis.fits import FIT_PLAN, fit_groups
from innovwin.analysis.records import load_rows, run_records

Z95 = 1.959964


def plan_by(clock: str, against: str) -> tuple:
    return next(by for planned, axis, by in FIT_PLAN if (planned, axis) == (clock, against))


def alpha_trend(fits: list[dict], widen_to: float) -> dict | None:
    """alpha against log2 width, weighted by each fit's interval, and its value at ``widen_to`` with a 95%
    interval; None with fewer than two widths whose alpha has a finite interval."""
    usable = [f for f in fits if None not in (f["ml_alpha"], f["ml_alpha_lo"], f["ml_alpha_hi"])]
    if len({f["width"] for f in usable}) < 2:
        return None
    x = np.log2([f["width"] for f in usable])
    y = np.array([f["ml_alpha"] for f in usable])
    se = np.array([(f["ml_alpha_hi"] - f["ml_alpha_lo"]) / (2 * Z95) for f in usable])
    design = np.stack([np.ones_like(x), x], axis=1)
    weights = 1 / se**2
    covariance = np.linalg.inv(design.T @ (weights[:, None] * design))
    coef = covariance @ design.T @ (weights * y)
    at = np.array([1.0, math.log2(widen_to)])
    estimate, spread = float(at @ coef), float(math.sqrt(at @ covariance @ at))
    slope_se = float(math.sqrt(covariance[1, 1]))
    return {"per_doubling": float(coef[1]), "per_doubling_lo": float(coef[1] - Z95 * slope_se),
            "per_doubling_hi": float(coef[1] + Z95 * slope_se), "width": widen_to, "alpha": estimate,
            "alpha_lo": estimate - Z95 * spread, "alpha_hi": estimate + Z95 * spread,
            "chi2": float(np.sum(weights * (y - design @ coef) ** 2)), "widths": len(usable)}


def interval(fit: dict, name: str = "ml_alpha") -> str:
    if fit[name] is None:
        return f"— ({fit['ml_note']})"
    ends = ", ".join("open" if end is None else f"{end:.2f}" for end in (fit[f"{name}_lo"], fit[f"{name}_hi"]))
    return f"{fit[name]:.2f} [{ends}]"


def draw(records, by_width, trend, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    figure, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    colours = dict(zip(sorted(by_width), plt.rcParams["axes.prop_cycle"].by_key()["color"]))
    for record in records:
        lo, hi = record.mem.bounds()
        shown = record.mem.value if record.mem.value is not None else lo
        top = hi if math.isfinite(hi) else shown * 3
        left.plot([record.n_train] * 2, [max(lo, 1), top], color=colours[record.width], alpha=0.5)
        left.plot(record.n_train, shown, "o" if record.mem.measured else "^", color=colours[record.width])
    for width, fit in sorted(by_width.items()):
        if fit["ml_alpha"] is None:
            continue
        ns = np.array(sorted({r.n_train for r in records if r.width == width}), float)
        left.plot(ns, fit["ml_a"] * ns ** fit["ml_alpha"], color=colours[width],
                  label=f"width {width}: α {interval(fit)}")
    left.set(xscale="log", yscale="log", xlabel="training-set size N", ylabel="τ_mem (steps)",
             title="τ_mem against N (bars: 95% interval; ▲ never crossed)")
    ns = sorted({r.n_train for r in records})
    left.set_xticks(ns, [str(n) for n in ns])
    left.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
    left.legend(fontsize=8)
    widths = sorted(w for w, f in by_width.items() if f["ml_alpha"] is not None)
    for width in widths:
        fit = by_width[width]
        low = fit["ml_alpha"] - (fit["ml_alpha_lo"] if fit["ml_alpha_lo"] is not None else fit["ml_alpha"])
        high = (fit["ml_alpha_hi"] if fit["ml_alpha_hi"] is not None else fit["ml_alpha"]) - fit["ml_alpha"]
        right.errorbar(width, fit["ml_alpha"], yerr=[[low], [high]], fmt="o", color=colours[width], capsize=4)
    if trend is not None:
        xs = np.array([min(widths), trend["width"]], float)
        slope, at = trend["per_doubling"], trend["alpha"]
        right.plot(xs, at + slope * (np.log2(xs) - math.log2(trend["width"])), "k--", lw=1,
                   label=f"trend: {slope:+.2f} per doubling [{trend['per_doubling_lo']:+.2f}, "
                         f"{trend['per_doubling_hi']:+.2f}]")
        right.errorbar(trend["width"], at, yerr=[[at - trend["alpha_lo"]], [trend["alpha_hi"] - at]], fmt="s",
                       color="k", mfc="white", capsize=4, label=f"width {trend['width']:g} (extrapolated)")
    right.axhline(1.0, color="grey", lw=0.8, ls=":")
    right.set(xscale="log", xlabel="DiT width", ylabel="α of τ_mem ∝ N^α (censored ML, 95%)",
              title="α against width")
    shown = widths + ([int(trend["width"])] if trend is not None else [])
    right.set_xticks(shown, [str(w) for w in shown])
    right.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
    right.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(out.with_suffix(".png"), dpi=120)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("store")
    parser.add_argument("--widen-to", type=float, default=256.0, metavar="WIDTH")
    parser.add_argument("--out", default="docs/figures/dit-width")
    args = parser.parse_args(argv)
    records = [r for r in run_records(load_rows(args.store)) if r.arch == "dit"]
    if not records:
        raise SystemExit(f"no finished DiT run in {args.store}")
    against_n = fit_groups(records, "tau_mem", "n_train", plan_by("tau_mem", "n_train"))
    against_width = fit_groups(records, "tau_mem", "width", plan_by("tau_mem", "width"))
    by_width = {fit["width"]: fit for fit in against_n}
    if len(by_width) != len(against_n):
        raise SystemExit("the store holds more than one task or depth of DiT runs: give one study's store")
    trend = alpha_trend(against_n, args.widen_to)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    lines = ["| width | runs (censored) | α of τ_mem ∝ N^α (censored ML, 95%) | σ of log τ | N |",
             "|---|---|---|---|---|"]
    for width, fit in sorted(by_width.items()):
        ns = sorted({r.n_train for r in records if r.width == width})
        sigma = "" if fit["ml_sigma"] is None else f"{fit['ml_sigma']:.3f}"
        lines.append(f"| {width} | {fit['ml_n']} ({fit['ml_n_right']}) | {interval(fit)} | {sigma} "
                     f"| {ns[0]}–{ns[-1]} |")
    lines += ["", "| N | runs (censored) | τ_mem ∝ width^β (censored ML, 95%) | widths |", "|---|---|---|---|"]
    for fit in sorted(against_width, key=lambda f: f["n_train"]):
        widths = sorted({r.width for r in records if r.n_train == fit["n_train"]})
        lines.append(f"| {fit['n_train']} | {fit['ml_n']} ({fit['ml_n_right']}) | {interval(fit)} | "
                     f"{', '.join(map(str, widths))} |")
    if trend is not None:
        lines += ["", f"α against log2 width (weighted by the intervals, {trend['widths']} widths, χ² "
                      f"{trend['chi2']:.2f} on {trend['widths'] - 2} degrees of freedom): "
                      f"{trend['per_doubling']:+.2f} per doubling [{trend['per_doubling_lo']:+.2f}, "
                      f"{trend['per_doubling_hi']:+.2f}]; at width {trend['width']:g}: α ≈ {trend['alpha']:.2f} "
                      f"[{trend['alpha_lo']:.2f}, {trend['alpha_hi']:.2f}] (extrapolated)"]
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    out.with_suffix(".json").write_text(json.dumps({"against_n": against_n, "against_width": against_width,
                                                     "trend": trend}, indent=1, default=str) + "\n")
    draw(records, by_width, trend, out)
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
