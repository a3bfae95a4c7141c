"""The mixing and schedule plots (domain weights, DoReMi's trajectory, the schedule's makeup), as
small PNGs for Dagster metadata through :mod:`refinery.plots`."""

from __future__ import annotations

import numpy as np
import pandas as pd

from refinery.plots import figure_data_uri, pyplot


def weights_plot(table: pd.DataFrame) -> str:
    """Grouped bars: each method's weight per domain (PNG data URI)."""
    plt = pyplot()
    methods = [m for m in ("natural", "uniform", "dsir", "doremi") if m in table.columns]
    x = np.arange(len(table))
    width = 0.8 / len(methods)
    fig, ax = plt.subplots(figsize=(4.4, 3), dpi=80)
    for i, m in enumerate(methods):
        ax.bar(x + i * width - 0.4 + width / 2, table[m].fillna(0), width, label=m)
    ax.set_xticks(x, table["domain"], fontsize=7, rotation=20)
    ax.set_ylabel("weight", fontsize=8)
    ax.set_title("Domain weights by method", fontsize=9)
    ax.legend(fontsize=7)
    ax.tick_params(labelsize=7)
    fig.tight_layout()
    return figure_data_uri(fig)


def trajectory_plot(trajectory: pd.DataFrame) -> str:
    """DoReMi's domain weights over proxy steps (PNG data URI)."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(4.4, 3), dpi=80)
    for domain, part in trajectory.groupby("domain"):
        smooth = part["weight"].rolling(max(1, len(part) // 30), min_periods=1).mean()
        ax.plot(part["step"], smooth, label=str(domain), linewidth=1.2)
    ax.set_xlabel("proxy step", fontsize=8)
    ax.set_ylabel("domain weight", fontsize=8)
    ax.set_title("DoReMi weight trajectory", fontsize=9)
    ax.legend(fontsize=7)
    ax.tick_params(labelsize=7)
    fig.tight_layout()
    return figure_data_uri(fig)


def schedule_plot(manifest: pd.DataFrame) -> str:
    """Training order of the train split: each domain's share per tenth of training, and the
    mean difficulty per tenth when the strategy is a curriculum (PNG data URI)."""
    plt = pyplot()
    train = manifest[manifest["split"] == "train"]
    fig, ax = plt.subplots(figsize=(4.4, 3), dpi=80)
    if len(train):
        decile = np.minimum((train["position"].to_numpy() * 10) // max(len(train), 1), 9)
        shares = pd.crosstab(decile, train["domain"].to_numpy(), normalize="index")
        bottom = np.zeros(len(shares))
        for domain in shares.columns:
            ax.bar(shares.index, shares[domain], bottom=bottom, label=str(domain), width=0.85)
            bottom += shares[domain].to_numpy()
        ax.set_xlabel("tenth of training", fontsize=8)
        ax.set_ylabel("share of documents", fontsize=8)
        if train["difficulty"].notna().any():
            twin = ax.twinx()
            means = train.groupby(decile)["difficulty"].mean()
            twin.plot(
                means.index, means.to_numpy(), color="black", marker="o", linewidth=1.2, label="difficulty"
            )
            twin.set_ylabel("mean difficulty", fontsize=8)
            twin.tick_params(labelsize=7)
        ax.legend(fontsize=6, loc="lower left")
    ax.set_title("What training reads, in order", fontsize=9)
    ax.tick_params(labelsize=7)
    fig.tight_layout()
    return figure_data_uri(fig)
