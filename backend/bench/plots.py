"""Plots of the policy benchmark: quality and latency against the budget, with units and legends."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from .report import BOUNDS
from .spec import split_spec


def plot(rep: dict, results: list[dict], out: Path, name: str = "policies") -> None:
    """<name>_quality.png: PSNR and identity vs budget per policy; <name>_latency.png: ms per frame index."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pols = sorted({r["policy"] for r in rep["rows"]})
    tab20 = plt.get_cmap("tab20")(np.linspace(0, 1, 20))
    colour = {pol: tab20[(2 * k) % 20 if k < 10 else (2 * k + 1) % 20] for k, pol in enumerate(pols)}  # distinct
    fig, axes = plt.subplots(1, 3, figsize=(16, 4.6))
    for k, pol in enumerate(pols):
        rows = sorted((r for r in rep["rows"] if r["policy"] == pol), key=lambda r: r["share"])
        x = np.array([r["share"] for r in rows]) * 2 ** ((k - len(pols) / 2) * 0.012)  # dodge the error bars
        style = dict(
            marker="osD^v<>ph*"[k % 10],
            capsize=2,
            color=colour[pol],
            lw=2.4 if split_spec(pol)[0] in ("pafu", "packcache") else 1.1,
            ls="--" if split_spec(pol)[0] in BOUNDS else "-",
            label=pol,
            ms=4,
        )
        for ax, key in zip(axes, ("psnr", "adherence", "identity_persistence")):
            y = np.array([r[key][0] for r in rows])
            e = np.array([0 if math.isnan(r[key][1]) else r[key][1] for r in rows])
            if key != "psnr":  # scores are shares in [0, 1]: a t-interval past them is drawn to the bound
                e = np.stack([np.clip(np.minimum(e, y), 0, None), np.clip(np.minimum(e, 1 - y), 0, None)])
            ax.errorbar(x, y, yerr=e, **style)
    shares = sorted({r["share"] for r in rep["rows"]})
    for ax, (title, unit) in zip(
        axes,
        (
            ("PSNR vs full cache", "dB"),
            ("prompt adherence", "share of frames"),
            ("identity after occlusion", "share of events"),
        ),
    ):
        ax.set_xscale("log", base=2)
        ax.set_xticks(shares, [f"1/{round(1 / s)}" for s in shares])
        ax.minorticks_off()
        ax.set_xlabel(f"budget (share of the full cache at {rep['frames']} frames)")
        ax.set_ylabel(f"{title} [{unit}]")
        ax.set_title(
            f"{title} (mean ± 95% CI, n={rep['rows'][0]['n']} prompts)"
            + ("" if unit == "dB" else "\n(CI cut at 0 and 1)"),
            fontsize=10,
        )
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7, ncol=2, title="bold: PaFu-KV, PackCache; dashed: bounds", title_fontsize=7)
    fig.tight_layout()
    fig.savefig(out / f"{name}_quality.png", dpi=110)
    plt.close(fig)
    fig, ax = plt.subplots(figsize=(9, 4.2))
    full = [r for r in results if r["policy"] == "full"]
    if full:
        ax.plot(np.median([r["frame_ms"] for r in full], 0), label="full", color="k", lw=2)
    share = sorted({r["share"] for r in results if r["share"] is not None})
    pick = share[len(share) // 2 - 1] if len(share) > 1 else (share[0] if share else None)
    for pol in pols:
        rs = [r for r in results if r["policy"] == pol and r["share"] == pick]
        if rs:
            ax.plot(np.median([r["frame_ms"] for r in rs], 0), label=pol, lw=1, color=colour[pol])
    ax.set_xlabel("frame index")
    ax.set_ylabel("time per frame [ms] (median over prompts)")
    ax.set_title("per-frame latency, budget " + (f"1/{round(1 / pick)}" if pick else "?") + " of the full cache")
    ax.legend(fontsize=7, ncol=3)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out / f"{name}_latency.png", dpi=110)
    plt.close(fig)


# two-sided 95% Student t quantiles by degrees of freedom (1-30); beyond 30 the normal 1.96 is within 4%
