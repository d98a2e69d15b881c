"""memory.png: the server's memory over time against the plan limit and the verdict's thresholds."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # no display: CI and servers

import matplotlib.pyplot as plt

from loadtests.guard import MemorySample
from loadtests.thresholds import LoadSettings, Plan
from loadtests.verdict import MIB, Verdict


def render_chart(
    path: Path,
    samples: Sequence[MemorySample],
    verdict: Verdict,
    settings: LoadSettings,
    *,
    plan: Plan | None = None,
    request_counts: Sequence[tuple[float, int]] = (),
) -> Path:
    """Draw total/master/worker RSS, USS and cgroup usage with the limit, budget and slope fit.

    request_counts ((t_seconds, cumulative requests), Locust's per-second history) adds the
    request rate in a panel of its own under the memory panel (same time axis, its own scale),
    so a burst of requests can never be read as memory touching the budget line.
    """
    fig, (ax, rate) = plt.subplots(
        2, 1, figsize=(11, 8), dpi=100, sharex=True, gridspec_kw={"height_ratios": [3, 1]}
    )
    try:
        t = [s.t_seconds for s in samples]
        ax.plot(t, [s.total_rss_bytes / MIB for s in samples], lw=2, label="total RSS (sum)")
        ax.plot(t, [s.master_rss_bytes / MIB for s in samples], lw=1, label="master RSS")
        ax.plot(
            t,
            [sum(s.worker_rss_bytes.values()) / MIB for s in samples],
            lw=1,
            label="workers RSS",
        )
        uss = [(s.t_seconds, s.total_uss_bytes / MIB) for s in samples if s.total_uss_bytes]
        if uss:
            ax.plot(*zip(*uss, strict=True), ls=":", lw=1.2, label="total USS")
        usage = [(s.t_seconds, s.cgroup_usage_bytes / MIB) for s in samples if s.cgroup_usage_bytes]
        if usage:
            ax.plot(*zip(*usage, strict=True), ls="--", lw=1.2, label="cgroup usage")
        ax.axhline(settings.max_rss_mb, color="red", ls="--", lw=1.5,
                   label=f"RSS budget {settings.max_rss_mb:g} MB")  # fmt: skip
        if plan is not None:
            ax.axhline(plan.memory_limit_mb, color="black", lw=1.5,
                       label=f"plan limit {plan.memory_limit_mb} MB ({plan.name})")  # fmt: skip
        ax.axvspan(
            0,
            verdict.window_start_seconds,
            color="grey",
            alpha=0.12,
            label="prefill + warm-up (not judged for slope)",
        )
        fit = verdict.slope_fit
        if fit is not None and samples:
            x0, x1 = verdict.window_start_seconds, samples[-1].t_seconds
            ax.plot(
                [x0, x1],
                [fit.at(x0 / 60), fit.at(x1 / 60)],
                color="darkorange",
                lw=2,
                label=f"Theil-Sen {fit.slope:+.2f} MB/min (max {settings.max_slope_mb_per_min:g})",
            )
        previous = 0
        for s in samples:
            if s.recycles > previous:
                ax.axvline(s.t_seconds, color="purple", alpha=0.35, lw=1)
                previous = s.recycles
        if previous:
            ax.plot([], [], color="purple", alpha=0.35, label=f"worker recycles ({previous})")
        handles, labels = ax.get_legend_handles_labels()
        if len(request_counts) > 1:
            pairs = list(itertools.pairwise(request_counts))
            rate.step(
                [t1 for (_, _), (t1, _) in pairs],
                [(c1 - c0) / (t1 - t0) if t1 > t0 else 0.0 for (t0, c0), (t1, c1) in pairs],
                color="grey",
                lw=0.8,
            )
        rate.axvspan(0, verdict.window_start_seconds, color="grey", alpha=0.12)
        rate.set_ylabel("requests/s")
        rate.set_ylim(bottom=0)
        rate.grid(alpha=0.3)
        rate.set_xlabel("seconds since the guard started")
        ax.set_title(f"Server memory under load: {verdict.result}")
        ax.set_ylabel("MB (MiB)")
        ax.set_ylim(bottom=0)
        ax.grid(alpha=0.3)
        fig.legend(handles, labels, loc="lower center", ncol=4, fontsize=8, frameon=False)
        fig.tight_layout(rect=(0, 0.07, 1, 1))  # room for the legend under the axes
        fig.savefig(path)
    finally:
        plt.close(fig)
    return path
