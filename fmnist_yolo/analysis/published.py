"""Published Fashion-MNIST test accuracies (published.csv), to place a run among them."""

from __future__ import annotations

from importlib import resources

import pandas as pd


def benchmark_table() -> pd.DataFrame:
    """Published Fashion-MNIST test accuracies (Zalando's benchmark table and a few others), best first."""
    with resources.files("fmnist_yolo.analysis").joinpath("published.csv").open() as f:
        table = pd.read_csv(f, comment="#").fillna({"note": ""})
    return table.astype({"parameters": "Int64"}).sort_values("test_top1", ascending=False, ignore_index=True)


def place_in_benchmark(top1: float, label: str, parameters: int | None = None) -> pd.DataFrame:
    """The benchmark table with this run inserted where its test top-1 puts it; `rank` 1 is the best."""
    ours = pd.DataFrame([{"model": label, "parameters": parameters, "test_top1": top1, "approximate": False,
                          "note": "", "source": "this run"}])  # fmt: skip
    table = pd.concat([benchmark_table(), ours.astype({"parameters": "Int64"})], ignore_index=True)
    table = table.sort_values("test_top1", ascending=False, kind="stable", ignore_index=True)
    table.insert(0, "rank", table["test_top1"].rank(ascending=False, method="min").astype(int))
    return table
