"""A finished run as `report.md`: provenance, learning curves, confusion, per-class metrics, the most
confident errors, and where the run stands among published Fashion-MNIST results."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from ..config import DEFAULTS, check_options, default
from ..errors import ConfigError, RunError
from ..evaluation import metrics
from ..evaluation.evaluate import Evaluation, best_on_test, is_own_tree, other_tree_label
from ..files import naming, write_text
from ..rundir import best_epoch, is_run, load_history, paths, read_provenance
from .compare import comparison_row
from .published import place_in_benchmark


def _md(table: pd.DataFrame, floatfmt: str = ".4f", **kw) -> str:
    return table.to_markdown(floatfmt=floatfmt, **kw)


def _millions(n) -> str:
    return "" if pd.isna(n) else f"{n / 1e6:.2f}M"


def _tested(ev: Evaluation, own: bool, record) -> tuple[str, list[str]]:
    """What the test figures are of: the weights and the tree; and the warnings that go with them."""
    weights = Path(ev.weights).name
    warnings = []
    if weights != "best.pt":
        warnings.append(f"This run has no weights/best.pt (pruned?): the test figures are {weights}'s, the last "
                        "epoch's, not those of the epoch selected on val.")  # fmt: skip
    if own:
        return f"{weights} on the run's own test split", warnings
    checksum = f"manifest sha256 {ev.manifest_sha256[:12]}..." if ev.manifest_sha256 else "no manifest"
    trained = (record.data.get("manifest_sha256") or "")[:12] if record is not None else ""
    warnings.append(f"The test figures are on another tree, {ev.tree} ({checksum}), not the data this run was "
                    f"trained on{f' (manifest sha256 {trained}...)' if trained else ''}; the run's own test result "
                    "is unchanged.")  # fmt: skip
    return f"{weights} on {ev.tree} ({checksum})", warnings


def _facts(row: dict, record, ev: Evaluation, own: bool = True) -> tuple[pd.DataFrame, list[str]]:
    """Key facts of the run as a two-column table, and warnings a reader must not miss."""
    facts = {"run": row["path"], "trained by": row["recorded_by"]}
    warnings = []
    if record is not None:
        m, d = record.model, record.data
        facts["model"] = f"{m.get('used')} ({m.get('source')})"
        facts["parameters"] = f"{m['parameters']:,}" if m.get("parameters") else "unknown"
        checksum = d.get("manifest_sha256")
        facts["data"] = f"{d.get('tree')} (manifest sha256 {checksum[:12]}...)" if checksum else str(d.get("tree"))
        facts["model selection on"] = f"{d.get('model_selection_split', 'val')} {record.select_on}"
        facts["imgsz"] = f"{record.imgsz.get('requested')} requested, {record.imgsz.get('effective')} trained"
        ws = record.world_size
        facts["device"] = f"{record.device} ({f'{ws} processes, DDP' if ws > 1 else 'single process'})"
        if record.wall_time_s:
            facts["wall time"] = f"{record.wall_time_s:.0f} s"
        if record.status == "running":
            warnings.append(f"Training has not finished (interrupted?): `fmnist-yolo train resume={row['path']}` "
                            "continues it; this report shows the epochs so far.")  # fmt: skip
        if record.versions:
            facts["versions"] = ", ".join(f"{k} {v}" for k, v in record.versions.items())
        if not m.get("pretrained", False):
            warnings.append(f"Not pretrained: {m.get('source')}.")
        if d.get("model_selection_split") == "test":
            warnings.append("best.pt was selected on the test split (no val/), so the test score is optimistic.")
        if record.resumed:
            facts["resumed"] = str(record.resumed)
    else:
        facts["model"] = f"{row['model']} (plain Ultralytics run: no fmnist_yolo.json provenance)"
        facts["imgsz"] = f"{row['imgsz']} trained"
    facts["epochs"] = f"{row['epochs_completed']} completed of {row['epochs']} planned"
    facts["train time"] = f"{row['train_time_s']:.0f} s" if pd.notna(row["train_time_s"]) else "unknown"
    tested, said = _tested(ev, own, record)
    if Path(ev.weights).name == "best.pt":
        facts["best.pt"] = f"epoch {row['best_epoch']}, val top-1 {row['best_val_top1']:.4f}"
    else:
        facts["best.pt"] = "none in this run"
        facts[Path(ev.weights).name] = f"epoch {row['epochs_completed']} (the last)"
    facts["test of"] = tested
    facts["test"] = (f"top-1 {ev.top1:.4f}, top-5 {ev.top5:.4f}, macro-F1 {ev.macro_f1:.4f}, ECE {ev.ece:.4f} "
                     f"({len(ev.predictions)} images)")  # fmt: skip
    return pd.DataFrame({"": list(facts), "value": list(facts.values())}), warnings + said


def _epochs_shown(history: pd.DataFrame, best: int | None, at_most: int = 20) -> pd.DataFrame:
    """Every epoch of a short run; about `at_most` evenly spaced ones (plus best and last) of a long one."""
    if len(history) <= at_most:
        return history
    keep = set(history.index[:: -(-len(history) // at_most)]) | {history.index[-1]} | ({best} if best else set())
    return history.loc[sorted(keep)]


def report(
    run: str | Path, data: str | Path | None = None, csv: bool = default("report", "csv"), top: int = DEFAULTS.top
) -> Path:
    """Write `RUN/report.md` with its figures in `RUN/report/`; return the report's path.

    Args:
        run: a run directory (fmnist-yolo's or a plain `yolo classify train` one).
        data: a tree to evaluate best.pt on. The run's own data (the same manifest, e.g. moved) refreshes its stored
            test predictions and report; another tree's report is kept apart, as `RUN/report.<tree>-<manifest
            sha256[:12]>.md` with its figures in `RUN/report.<tree>-<...>/`, and the run's own result is unchanged.
        csv: also write every table as CSV into `RUN/report/`.
        top: how many of the most confidently misclassified test images to show.

    A failure (a damaged file, a full disk) changes nothing in the run directory.
    """
    check_options("report", {"data": data, "csv": csv, "top": top})
    try:
        path = _report(run, data, csv, top)
    except OSError as e:
        raise RunError(f"{e.filename or run}: cannot write the report: {e.strerror or e}") from None
    record = read_provenance(run)
    run_id = ((record.tracking if record else {}) or {}).get("mlflow", {}).get("run_id")
    if run_id and path == paths(run).report:  # another tree's report is not the run's
        from .. import tracking

        if tracking.enabled():
            tracking.log_report(run_id, path)
    return path


def _report(run: str | Path, data: str | Path | None, csv: bool, top: int) -> Path:
    from . import plots  # matplotlib: imported only when drawing

    run_dir = Path(run)
    if not is_run(run_dir):
        raise RunError(f"{run_dir}: not a training run directory (no results.csv and args.yaml)")
    record = read_provenance(run_dir)
    row = comparison_row(run_dir)
    history = load_history(run_dir)
    best = best_epoch(history, record.select_on if record else DEFAULTS.select_on)
    ev = best_on_test(run_dir, data)
    own = ev.tree is None or is_own_tree(run_dir, ev.tree)  # stored predictions are the run's own
    wrong = ev.misclassified(top)
    missing = [f for f in wrong["file"] if not Path(f).is_file()]
    if missing:
        raise ConfigError(f"{missing[0]}: test image not found (tree moved or rebuilt? pass data=TREE to re-evaluate)")
    facts, warnings = _facts(row, record, ev, own)
    confusions = metrics.top_confusions(ev.confusion, 5)
    weights = Path(ev.weights).name
    which = ("" if weights == "best.pt" else f", {weights}") + ("" if own else f", on {Path(ev.tree).name}")
    label = f"{row['model']}, {row['epochs_completed']} epochs, imgsz {row['imgsz']} (this run{which})"
    bench = place_in_benchmark(ev.top1, label, row["parameters"] if pd.notna(row.get("parameters")) else None)

    out = paths(run_dir)
    if not own:  # another tree's report beside the run's own, labelled with the tree and its manifest
        label_apart = other_tree_label(ev.tree, ev.manifest_sha256)
        out = _Out(
            run_dir,
            run_dir / f"{out.report.stem}.{label_apart}.md",
            run_dir / f"{out.report_assets.name}.{label_apart}",
        )
    work = run_dir / f".{out.report_assets.name}.tmp"  # built aside, swapped in whole: a failure changes nothing
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir()
    try:
        figures = {
            "learning_curves": plots.learning_curves(history, work / "learning_curves.png", best),
            "confusion": plots.confusion_heatmap(ev.confusion, work / "confusion.png", "Confusion matrix, test"),
            "misclassified": plots.image_grid(wrong, work / "misclassified.png",
                                              title=f"The {len(wrong)} most confident errors on test"),
            "reliability": plots.reliability_diagram(ev.calibration, work / "reliability.png", ev.ece),
        }  # fmt: skip
        if csv:
            tables = {"summary": facts.set_index(""), "history": history, "per_class": ev.per_class,
                      "confusion": ev.confusion, "confusion_normalized": ev.confusion_normalized,
                      "top_confusions": confusions, "misclassified": wrong, "calibration": ev.calibration,
                      "benchmark": bench}  # fmt: skip
            for name, table in tables.items():
                with naming(work / f"{name}.csv"):
                    table.to_csv(work / f"{name}.csv", index=name not in ("top_confusions", "misclassified",
                                                                          "benchmark"))  # fmt: skip
        figures = {k: f"{out.report_assets.name}/{v.name}" for k, v in figures.items()}
        text = _markdown(row, facts, warnings, history, best, ev, wrong, confusions, bench, figures)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    _swap_in(work, out, text)
    return out.report


@dataclass(frozen=True)
class _Out:
    """Where a report goes: its directory, report.md and the figures' folder (RunPaths' names for the run's own)."""

    dir: Path
    report: Path
    report_assets: Path


def _swap_in(work: Path, out, text: str) -> None:
    """The new figures and report.md replace the old ones: the old assets are parked, then removed."""
    old = out.dir / f".{out.report_assets.name}.old"
    shutil.rmtree(old, ignore_errors=True)
    if out.report_assets.is_dir():
        out.report_assets.rename(old)
    work.rename(out.report_assets)
    write_text(out.report, text)
    shutil.rmtree(old, ignore_errors=True)


def _markdown(row, facts, warnings, history, best, ev, wrong, confusions, bench, figures: dict[str, str]) -> str:
    """report.md's text; `figures` maps a figure's name to its path relative to the report."""

    def fig(name: str, alt: str) -> str:
        return f"![{alt}]({figures[name]})"

    rank = int(bench.loc[bench["source"] == "this run", "rank"].iloc[0])
    shown = wrong.assign(file=[str(Path(f).relative_to(Path(f).parents[2])) for f in wrong["file"]])
    bench_md = bench.assign(
        parameters=bench["parameters"].map(_millions),
        approximate=bench["approximate"].map({True: "~", False: ""}),
        model=[f"**{m}**" if s == "this run" else m for m, s in zip(bench["model"], bench["source"])],
    )
    history_cols = [c for c in ("time", "train_loss", "val_loss", "val_top1", "val_top5", "lr_pg0") if c in history]
    lines = [
        f"# Report: {row['path']}",
        "",
        *(f"> **Warning.** {w}" for w in warnings),
        "",
        "## Summary",
        "",
        _md(facts, index=False),
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
    return "\n".join(lines)
