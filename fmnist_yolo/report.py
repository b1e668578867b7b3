"""A finished run as `report.md`: provenance, learning curves, confusion, per-class metrics, the most
confident errors, and where the run stands among published Fashion-MNIST results."""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path

import pandas as pd
import yaml

from . import metrics
from .compare import best_epoch, selection_rule, summarize
from .errors import ConfigError
from .evaluate import Evaluation, best_on_test
from .files import atomic_path
from .train import PROVENANCE, TEST_PREDICTIONS, stored_test

REPORT = "report.md"
ASSETS = "report"  # PNGs (and CSVs with csv=True) beside report.md


def benchmark_table() -> pd.DataFrame:
    """Published Fashion-MNIST test accuracies (Zalando's benchmark table and a few others), best first."""
    with resources.files("fmnist_yolo").joinpath("benchmark.csv").open() as f:
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


def _md(table: pd.DataFrame, floatfmt: str = ".4f", **kw) -> str:
    return table.to_markdown(floatfmt=floatfmt, **kw)


def _millions(n) -> str:
    return "" if pd.isna(n) else f"{n / 1e6:.2f}M"


def _summary(row: dict, provenance: dict | None, ev: Evaluation) -> tuple[pd.DataFrame, list[str]]:
    """Key facts of the run as a two-column table, and warnings a reader must not miss."""
    facts = {"run": row["path"], "trained by": row["recorded_by"]}
    warnings = []
    if provenance:
        m, d = provenance["model"], provenance["data"]
        facts["model"] = f"{m['used']} ({m['source']})"
        facts["parameters"] = f"{m['parameters']:,}"
        facts["data"] = f"{d['tree']} (manifest sha256 {d['manifest_sha256'][:12]}...)"
        facts["model selection on"] = f"{d['model_selection_split']} {d.get('model_selection_metric', 'top1_top5')}"
        facts["imgsz"] = f"{provenance['imgsz']['requested']} requested, {provenance['imgsz']['effective']} trained"
        ws = provenance["world_size"]
        facts["device"] = f"{provenance['device']} ({f'{ws} processes, DDP' if ws > 1 else 'single process'})"
        if "wall_time_s" in provenance:
            facts["wall time"] = f"{provenance['wall_time_s']:.0f} s"
        if provenance.get("status") == "running":
            warnings.append(f"Training has not finished (interrupted?): `fmnist-yolo train resume={row['path']}` "
                            "continues it; this report shows the epochs so far.")  # fmt: skip
        facts["versions"] = ", ".join(f"{k} {v}" for k, v in provenance["versions"].items())
        if not m["pretrained"]:
            warnings.append(f"Not pretrained: {m['source']}.")
        if d["model_selection_split"] == "test":
            warnings.append("best.pt was selected on the test split (no val/), so the test score is optimistic.")
        if "resumed" in provenance:
            facts["resumed"] = str(provenance["resumed"])
    else:
        facts["model"] = f"{row['model']} (plain Ultralytics run: no fmnist_yolo.json provenance)"
        facts["imgsz"] = f"{row['imgsz']} trained"
    facts["epochs"] = f"{row['epochs_completed']} completed of {row['epochs']} planned"
    facts["train time"] = f"{row['train_time_s']:.0f} s" if pd.notna(row["train_time_s"]) else "unknown"
    facts["best.pt"] = f"epoch {row['best_epoch']}, val top-1 {row['best_val_top1']:.4f}"
    facts["test"] = (f"top-1 {ev.top1:.4f}, top-5 {ev.top5:.4f}, macro-F1 {ev.macro_f1:.4f}, ECE {ev.ece:.4f} "
                     f"({len(ev.predictions)} images)")  # fmt: skip
    return pd.DataFrame({"": list(facts), "value": list(facts.values())}), warnings


def _epochs_shown(history: pd.DataFrame, best: int | None, at_most: int = 20) -> pd.DataFrame:
    """Every epoch of a short run; about `at_most` evenly spaced ones (plus best and last) of a long one."""
    if len(history) <= at_most:
        return history
    keep = set(history.index[:: -(-len(history) // at_most)]) | {history.index[-1]} | ({best} if best else set())
    return history.loc[sorted(keep)]


def report(run: str | Path, data: str | Path | None = None, csv: bool = False, top: int = 25) -> Path:
    """Write `RUN/report.md` with its figures in `RUN/report/`; return the report's path.

    Args:
        run: a run directory (fmnist-yolo's or a plain `yolo classify train` one).
        data: the tree to evaluate on when the run has no current stored test predictions.
        csv: also write every table as CSV into `RUN/report/`.
        top: how many of the most confidently misclassified test images to show.
    """
    from . import plots  # matplotlib: imported only when drawing

    run_dir = Path(run)
    if not (run_dir / "results.csv").is_file() or not (run_dir / "args.yaml").is_file():
        raise ConfigError(f"{run_dir}: not a training run directory (no results.csv and args.yaml)")
    provenance = json.loads((run_dir / PROVENANCE).read_text()) if (run_dir / PROVENANCE).is_file() else None
    row = summarize(run_dir)
    history = metrics.load_history(run_dir)
    best = best_epoch(history, selection_rule(run_dir))
    ev = best_on_test(run_dir, data)
    wrong = ev.misclassified(top)
    missing = [f for f in wrong["file"] if not Path(f).is_file()]
    if missing:
        raise ConfigError(f"{missing[0]}: test image not found (tree moved or rebuilt? pass data=TREE to re-evaluate)")
    summary, warnings = _summary(row, provenance, ev)
    confusions = metrics.top_confusions(ev.confusion, 5)
    label = f"{row['model']}, {row['epochs_completed']} epochs, imgsz {row['imgsz']} (this run)"
    bench = place_in_benchmark(ev.top1, label, row["parameters"] if pd.notna(row.get("parameters")) else None)
    rank = int(bench.loc[bench["source"] == "this run", "rank"].iloc[0])

    assets = run_dir / ASSETS
    assets.mkdir(exist_ok=True)
    figures = {
        "learning_curves": plots.learning_curves(history, assets / "learning_curves.png", best),
        "confusion": plots.confusion_heatmap(ev.confusion, assets / "confusion.png", "Confusion matrix, test"),
        "misclassified": plots.image_grid(wrong, assets / "misclassified.png",
                                          title=f"The {len(wrong)} most confident errors on test"),
        "reliability": plots.reliability_diagram(ev.calibration, assets / "reliability.png", ev.ece),
    }  # fmt: skip
    tables = {"summary": summary.set_index(""), "history": history, "per_class": ev.per_class,
              "confusion": ev.confusion, "confusion_normalized": ev.confusion_normalized,
              "top_confusions": confusions, "misclassified": wrong, "calibration": ev.calibration,
              "benchmark": bench}  # fmt: skip
    if csv:
        for name, table in tables.items():
            table.to_csv(assets / f"{name}.csv", index=name not in ("top_confusions", "misclassified", "benchmark"))

    def fig(name: str, alt: str) -> str:
        return f"![{alt}]({ASSETS}/{figures[name].name})"

    shown = wrong.assign(file=[str(Path(f).relative_to(Path(f).parents[2])) for f in wrong["file"]])
    bench_md = bench.assign(parameters=bench["parameters"].map(_millions),
                            approximate=bench["approximate"].map({True: "~", False: ""}),
                            model=[f"**{m}**" if s == "this run" else m for m, s in zip(bench["model"], bench["source"])])
    history_cols = [c for c in ("time", "train_loss", "val_loss", "val_top1", "val_top5", "lr_pg0") if c in history]
    lines = [
        f"# Report: {row['path']}",
        "",
        *(f"> **Warning.** {w}" for w in warnings),
        "",
        "## Summary",
        "",
        _md(summary, index=False),
        "",
        "## Learning curves",
        "",
        fig("learning_curves", "learning curves"),
        "",
        _md(_epochs_shown(history, best)[history_cols], floatfmt=".4g"),
        "",
        "## Confusion matrix (test)",
        "",
        fig("confusion", "confusion matrix heatmap"),
        "",
        "Most frequent confusions:",
        "",
        _md(confusions, index=False),
        "",
        "## Per-class metrics (test)",
        "",
        "Accuracy is one-vs-rest; `most_confused_with` is the class this one is most often predicted as.",
        "",
        _md(ev.per_class),
        "",
        "## Calibration (test)",
        "",
        f"Expected calibration error (ECE, {len(ev.calibration)} equal-width bins of the top-1 confidence): "
        f"**{ev.ece:.4f}**. Bars below the diagonal are overconfident bins.",
        "",
        fig("reliability", "reliability diagram"),
        "",
        _md(ev.calibration[ev.calibration["count"] > 0], floatfmt=".4f"),
        "",
        f"## The {len(wrong)} most confidently misclassified test images",
        "",
        fig("misclassified", "most confidently misclassified test images"),
        "",
        _md(shown, index=False),
        "",
        "## Place in the Fashion-MNIST benchmark",
        "",
        f"Test top-1 {ev.top1:.4f} ranks **{rank} of {len(bench)}** among published results (Zalando Research's "
        "benchmark table as submitted, not verified by Zalando; `approximate` marks figures given as ~; the "
        "public YOLO runs used the test split for validation).",
        "",
        _md(bench_md, index=False),
        "",
    ]
    with atomic_path(run_dir / REPORT) as tmp:
        tmp.write_text("\n".join(lines))
    return run_dir / REPORT
