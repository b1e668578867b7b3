"""PNG figures for the report, drawn with matplotlib's object API (no pyplot, no GUI backend).

Only matplotlib's bundled DejaVu fonts are used: Ultralytics' plotting would try to download Arial,
which must not matter offline.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator
from PIL import Image

from ..files import atomic_path

DPI = 110


def _save(fig: Figure, path: Path) -> Path:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=DPI, bbox_inches="tight")
    return Path(path)


def learning_curves(history: pd.DataFrame, path: Path, best_epoch: int | None = None) -> Path:
    """Losses, val accuracy and learning rate per epoch (a dashed line at the epoch kept as best.pt)."""
    fig = Figure(figsize=(12, 3.8), layout="constrained")
    ax_loss, ax_acc, ax_lr = fig.subplots(1, 3)
    epochs = history.index
    for col, label in (("train_loss", "train loss"), ("val_loss", "val loss")):
        if col in history:
            ax_loss.plot(epochs, history[col], marker="o", label=label)
    for col, label in (("val_top1", "val top-1"), ("val_top5", "val top-5")):
        ax_acc.plot(epochs, history[col], marker="o", label=label)
    if "lr_pg0" in history:
        ax_lr.plot(epochs, history["lr_pg0"], marker="o", color="tab:green")
    for ax, title in ((ax_loss, "Loss"), (ax_acc, "Validation accuracy"), (ax_lr, "Learning rate (group 0)")):
        ax.set_title(title)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        if best_epoch is not None:
            ax.axvline(best_epoch, color="grey", linestyle="--", linewidth=1)
        if ax.get_legend_handles_labels()[0]:
            ax.legend()
    ax_acc.set_ylim(top=1.0)
    ax_lr.ticklabel_format(axis="y", style="sci", scilimits=(-2, 3))
    fig.suptitle("Learning curves" + (f" (dashed: epoch {best_epoch}, kept as best.pt)" if best_epoch else ""))
    return _save(fig, path)


def confusion_heatmap(matrix: pd.DataFrame, path: Path, title: str = "Confusion matrix") -> Path:
    """Counts annotated in each cell, coloured by the share of the true class (row-normalised)."""
    counts = matrix.to_numpy()
    share = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    n = len(matrix)
    fig = Figure(figsize=(0.75 * n + 2.5, 0.75 * n + 1.5), layout="constrained")
    ax = fig.subplots()
    im = ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="share of the true class")
    ax.set_xticks(range(n), matrix.columns, rotation=45, ha="right")
    ax.set_yticks(range(n), matrix.index)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    for i in range(n):
        for j in range(n):
            if counts[i, j]:
                ax.text(j, i, str(counts[i, j]), ha="center", va="center", fontsize=8,
                        color="white" if share[i, j] > 0.5 else "black")  # fmt: skip
    ax.set_title(f"{title} ({counts.sum()} images)")
    return _save(fig, path)


def image_grid(table: pd.DataFrame, path: Path, columns: int = 5, title: str = "") -> Path:
    """The images in `table['file']`, each captioned with its true and predicted class and confidence."""
    rows = max(1, -(-len(table) // columns))
    fig = Figure(figsize=(2.3 * columns, 2.6 * rows + 0.4), layout="constrained")
    axes = np.atleast_1d(fig.subplots(rows, columns)).ravel()
    for ax in axes:
        ax.axis("off")
    for ax, r in zip(axes, table.itertuples()):
        with Image.open(r.file) as im:
            ax.imshow(np.asarray(im.convert("L")), cmap="gray", vmin=0, vmax=255, interpolation="nearest")
        ax.set_title(f"true: {r.true}\npred: {r.pred} ({r.confidence:.2f})", fontsize=8)
    if title:
        fig.suptitle(title)
    return _save(fig, path)


def reliability_diagram(table: pd.DataFrame, path: Path, ece: float) -> Path:
    """Accuracy against confidence per bin (bars), the diagonal of perfect calibration, and images per bin."""
    fig = Figure(figsize=(9, 3.8), layout="constrained")
    ax, ax_n = fig.subplots(1, 2, width_ratios=[3, 2])
    width = float(table["upper"].iloc[0] - table["lower"].iloc[0])
    filled = table[table["count"] > 0]
    ax.bar(filled["lower"], filled["accuracy"], width=width, align="edge", edgecolor="black", label="accuracy")
    ax.bar(filled["lower"], filled["confidence"] - filled["accuracy"], bottom=filled["accuracy"], width=width,
           align="edge", color="tab:red", alpha=0.35, label="gap to confidence")  # fmt: skip
    ax.plot([0, 1], [0, 1], color="grey", linestyle="--", linewidth=1, label="perfect calibration")
    ax.set(xlim=(0, 1), ylim=(0, 1), xlabel="confidence (top-1 probability)", ylabel="accuracy")
    ax.set_title(f"Reliability (ECE {ece:.4f}, {len(table)} bins)")
    ax.legend(loc="upper left")
    ax_n.bar(table["lower"], table["count"], width=width, align="edge", edgecolor="black")
    ax_n.set(xlim=(0, 1), xlabel="confidence", ylabel="images", yscale="log", title="Images per bin")
    for a in (ax, ax_n):
        a.grid(alpha=0.3)
    return _save(fig, path)
