"""The published Fashion-MNIST results table, and a run's place in it."""

import re

import fmnist_yolo
from fmnist_yolo.analysis.published import place_in_benchmark
from tests.conftest import ROOT


def test_benchmark_figures_carried_from_shared():
    """Every accuracy of the shared zalando-benchmark.md (a copy ships in tests/data) is in the packaged table."""
    shared = ROOT / "tests" / "data" / "zalando-benchmark.md"
    figures = [float(m) for m in re.findall(r"(?<![\d.])0\.\d{3}(?!\d)", shared.read_text())]
    assert len(figures) >= 10
    table = fmnist_yolo.benchmark_table()
    assert len(figures) == len(table) and sorted(figures) == sorted(table["test_top1"])
    assert table["test_top1"].is_monotonic_decreasing


def test_place_in_benchmark_ranks():
    table = fmnist_yolo.benchmark_table()
    top1 = (table["test_top1"].iloc[2] + table["test_top1"].iloc[3]) / 2  # between the 3rd and 4th
    placed = place_in_benchmark(top1, "ours", 1_500_000)
    ours = placed[placed["source"] == "this run"].iloc[0]
    assert ours["rank"] == 4 and len(placed) == len(table) + 1 and ours["parameters"] == 1_500_000
    assert place_in_benchmark(1.0, "perfect")["rank"].iloc[0] == 1
    assert place_in_benchmark(0.0, "worst")["rank"].iloc[-1] == len(table) + 1
