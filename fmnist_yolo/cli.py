"""`fmnist-yolo`: the command line. Each command is a function whose docstring is its help and whose body calls
the library; every option is Ultralytics-style `key=value` and means the same in every command that takes it.
Errors cross this boundary once, as `Error: <message>` and exit code 1.
"""

from __future__ import annotations

import argparse
import inspect
import logging
import sys
import warnings
from collections.abc import Callable
from pathlib import Path

from .errors import ConfigError, FmnistError, FmnistWarning
from .version import __version__

# Shared options: one meaning in every command that takes it.
SHARED = {
    "csv": "csv=PATH: also write the tables as CSV: a directory, or a .csv file for a command of one table; "
    "csv=True: the command's own place",
    "data": "data=TREE: the prepared tree (default datasets/fashion-mnist, prepared when missing)",
    "model": "model=RUN_DIR|WEIGHTS.pt: a run directory means its weights/best.pt",
    "workers": "workers=N: processes (default: all cores)",
}
COMMANDS: dict[str, Callable] = {}


def command(fn: Callable) -> Callable:
    """Register `fn` as the subcommand named after it (less the cmd_ prefix); its docstring is its help."""
    COMMANDS[fn.__name__.removeprefix("cmd_")] = fn
    return fn


def typed(value: str):
    """A command-line value typed as Ultralytics' CLI types it (its smart_value): none/true/false in any case, Python
    literals (numbers, lists), else the string. Here so that a command does not import Ultralytics to read it."""
    import ast

    lower = value.lower()
    if lower in ("none", "true", "false"):
        return {"none": None, "true": True, "false": False}[lower]
    try:
        return ast.literal_eval(value)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return value


def parse_overrides(items: list[str]) -> dict:
    """`key=value` words into a dict, values typed the way Ultralytics' CLI types them."""
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"expected key=value, found {item!r}")
        out[key.strip()] = typed(value.strip())
    return out


def _split(words: list[str], positional: int = 0) -> tuple[list[str], dict]:
    """Up to `positional` leading words without '=', then key=value words."""
    pos = []
    while words and len(pos) < positional and "=" not in words[0]:
        pos.append(words.pop(0))
    return pos, parse_overrides(words)


def _only(kv: dict, allowed: set[str], command: str) -> None:
    """ConfigError for a key this command does not take, with the closest one or the list."""
    import difflib

    for key in kv:
        if key not in allowed:
            close = difflib.get_close_matches(key, allowed, n=1, cutoff=0.6)
            hint = f"did you mean '{close[0]}'?" if close else f"it takes {', '.join(sorted(allowed)) or 'none'}"
            raise ConfigError(f"unknown {command} argument '{key}'; {hint}")


def _csv_target(value, default: Path, single: str | None = None) -> Path | None:
    """Where csv= writes: None (not asked), the default place (csv=True), a directory, or a .csv file."""
    if value in (None, False):
        return None
    if value is True:
        return default
    path = Path(str(value))
    return path if (single and path.suffix == ".csv") else (path / single if single else path)


@command
def cmd_prepare(words: list[str]) -> int:
    """Convert the four Fashion-MNIST IDX files into the Ultralytics class-folder tree.

    fmnist-yolo prepare [source=DIR] [out=DIR] [val_size=5000] [split_seed=0] [force=True] [verify=False] [workers=N]
                        [link=False]

    source=DIR   the four IDX files (default: $FMNIST_SOURCE, datasets/raw/fashion-mnist,
                 /usr/share/datasets/fashion-mnist, then a download from the official mirrors)
    out=DIR      the tree to write (default: datasets/fashion-mnist)
    val_size=N   stratified hold-out from the training images for model selection; 0 = train/test only
    split_seed=S seed of the hold-out
    force=True   rebuild even when the tree is up to date
    verify=False skip the official checksums (for your own IDX files)
    workers=N    writer processes (default: all cores)
    link=False   no datasets_dir link for `yolo ... data=fashion-mnist` (default: link the default tree only;
                 link=True: link this tree too)
    """
    from .data.prepare import prepare

    _, kv = _split(words)
    _only(kv, {"source", "out", "val_size", "split_seed", "force", "verify", "workers", "link"}, "prepare")
    prepare(**kv)
    return 0


@command
def cmd_check(words: list[str]) -> int:
    """Verify a prepared tree against its manifest: missing, extra, truncated and corrupted images, by path.

    fmnist-yolo check [TREE] [workers=N]

    Exit code 1 when anything is wrong; Ultralytics' *.cache files are ignored. `fmnist-yolo prepare force=True`
    repairs the tree.
    """
    import time

    from .config import DEFAULTS
    from .data.check import check
    from .data.tree import repair_hint

    pos, kv = _split(words, 1)
    _only(kv, {"workers", "tree"}, "check")
    tree = Path(kv.pop("tree", None) or (pos[0] if pos else DEFAULTS.out))
    t0 = time.perf_counter()
    problems = check(tree, **kv)
    for row in problems.itertuples():
        print(f"{row.problem}: {tree / row.path} ({row.detail})")
    if len(problems):
        kinds = problems["problem"].value_counts()
        raise FmnistError(f"{tree}: {len(problems)} problems ({', '.join(f'{n} {k}' for k, n in kinds.items())}); "
                          f"{repair_hint(tree, listed=True)}")  # fmt: skip
    print(f"{tree}: OK, every image matches the manifest ({time.perf_counter() - t0:.1f}s)")
    return 0


@command
def cmd_train(words: list[str]) -> int:
    """Train (default: the Ultralytics recipe, yolo11n-cls.pt, epochs=100, imgsz=28), select best.pt on val,
    evaluate it once on test, and record the provenance in RUN/fmnist_yolo.json.

    fmnist-yolo train [key=value ...]

    Any Ultralytics train argument passes through (epochs=5 batch=64 device=cpu ...), and:
    recipe=NAME|FILE.yaml  a shipped recipe (`fmnist-yolo recipes`) or your own
    cfg=FILE.yaml          arguments from a file; the command line wins
    fast=True              the in-memory data path (same optimizer steps as the stock loader)
    fused_bn=True          with fast=True: BatchNorm over each fused step's images, not per micro-batch (faster)
    select_on=top1         choose best.pt on val top-1 alone (default top1_top5: Ultralytics' mean)
    strict_weights=True    refuse the offline from-scratch fallback for missing pretrained weights
    evaluate_test=False    skip the test evaluation (for sweeps)
    resume=RUN_DIR         continue an interrupted run from its last.pt (resume=True: the latest run)
    """
    from .training.train import train

    _, kv = _split(words)
    run = train(**kv)
    print(run.result_line())
    return 0


@command
def cmd_reproduce(words: list[str]) -> int:
    """Train a run again from its record alone (RUN/fmnist_yolo.json), into a new run beside it, and compare the two:
    RUN-reproduce/reproduction.json holds the verdict (identical, equal within rounding, different).

    fmnist-yolo reproduce RUN [name=NAME] [device=D] [epochs=N] [strict=True] [data=TREE]

    The tree must be the recorded one by content (rebuilt with the recorded options when the recorded source
    files are at hand); every version that differs from the record is named in one warning (strict=True refuses).
    epochs=N reproduces the first N epochs on the recorded schedule; a recorded interruption and resume is
    replayed. Exit code 1 when the verdict is different.
    """
    from .reproduction import reproduce

    pos, kv = _split(words, 1)
    _only(kv, {"run", "name", "device", "epochs", "strict", "data"}, "reproduce")
    run = kv.pop("run", None) or (pos[0] if pos else None)
    if run is None:
        raise ConfigError("reproduce needs a run directory: fmnist-yolo reproduce RUN")
    result = reproduce(run, **kv)
    print(result.verdict_line())
    if result.verdict == "different":
        where = result.report["parts_at_epoch"]
        how = f"they part at epoch {where}" if where else "its history agrees, best.pt's figures do not"
        raise FmnistError(f"{result.dir} does not reproduce {result.of}: {how}; {result.dir / 'reproduction.json'} "
                          "has every figure")  # fmt: skip
    return 0


@command
def cmd_tune(words: list[str]) -> int:
    """Search hyperparameters on Ray Tune: each trial is one train run; ASHA stops weak trials early on val top-1.

    fmnist-yolo tune [iterations=10] [grace_period=1] [space=FILE.yaml] [address=auto] [gpu_per_trial=G]
                     [cpu_per_trial=C] [project=...] [name=tune] [train key=value ...]

    The space samples lr0, lrf, momentum, weight_decay, warmup_epochs, dropout, fliplr, erasing, scale and
    auto_augment (not with fast=True); trials never see test. Writes tune_results.csv and best_hyperparameters.yaml
    (a train cfg=) into runs/classify/tune. Needs the tune extra: pip install 'fmnist-yolo[tune]'.
    """
    from .training.tune import BEST, RESULTS, tune

    _, kv = _split(words)
    table = tune(**kv)
    out = Path(table.attrs["dir"])
    print(table.drop(columns=["run", "error"]).to_string(index=False, float_format="%.4g"))
    print(f"{len(table)} trials; table in {out / RESULTS}; best configuration in {out / BEST} "
          f"(train with: fmnist-yolo train cfg={out / BEST})")  # fmt: skip
    return 0


@command
def cmd_recipes(words: list[str]) -> int:
    """List the shipped training recipes, or print one recipe's YAML path.

    fmnist-yolo recipes [NAME]

    Use one with `fmnist-yolo train recipe=NAME`, `make train RECIPE=NAME`, `fmnist_yolo.train(recipe=NAME)`, or
    Ultralytics' own CLI: `yolo classify train cfg=$(fmnist-yolo recipes NAME) data=fashion-mnist` (not `cpu`,
    which sets fmnist-yolo's own `fast` key).
    """
    from .training.args import recipe_path, recipes

    pos, kv = _split(words, 1)
    _only(kv, set(), "recipes")
    if pos:  # the file alone, for `yolo classify train cfg=$(fmnist-yolo recipes strong)`
        print(recipe_path(pos[0]).resolve())
        return 0
    for name, path in recipes().items():
        about = path.read_text().splitlines()[0].lstrip("# ").removeprefix(f"{name}: ")
        print(f"{name:10s} {about}\n{'':10s} {path.resolve()}")
    return 0


@command
def cmd_val(words: list[str]) -> int:
    """Evaluate weights on a split with Ultralytics' validator: top-1, top-5, macro-F1, ECE and per-class metrics.

    fmnist-yolo val model=RUN_DIR|WEIGHTS.pt [split=test|val] [data=TREE] [tta=True|flip+shift] [csv=DIR]
                    [Ultralytics val key=value ...]

    tta=True averages each image's class probabilities with its mirror image's (flip+shift: also 2-pixel shifts);
    decide it on split=val. csv=DIR writes per_class.csv, confusion.csv and predictions.csv.
    """
    from .evaluation.evaluate import evaluate

    _, kv = _split(words)
    if "model" not in kv:
        raise ConfigError("val needs model=RUN_DIR_OR_WEIGHTS")
    csv = kv.pop("csv", None)
    result = evaluate(kv.pop("model"), kv.pop("split", "test"), kv.pop("data", None), **kv)
    print(f"{result.split}: top-1 {result.top1:.4f}, top-5 {result.top5:.4f}, macro-F1 {result.macro_f1:.4f}, "
          f"ECE {result.ece:.4f} ({len(result.predictions)} images, {result.weights}"
          f"{f', TTA {result.tta}' if result.tta else ''})")  # fmt: skip
    print(result.per_class.to_string(float_format="%.4f"))
    if (out := _csv_target(csv, Path("."))) is not None:
        result.to_csv(out)
        print(f"Wrote per_class.csv, confusion.csv, predictions.csv to {out}")
    return 0


@command
def cmd_predict(words: list[str]) -> int:
    """Classify an image or a directory of images: file, class and confidence per image.

    fmnist-yolo predict model=RUN_DIR|WEIGHTS.pt source=IMAGE_OR_DIR [csv=FILE.csv|DIR] [Ultralytics key=value ...]
    """
    from .evaluation.predict import predict

    _, kv = _split(words)
    missing = [k for k in ("model", "source") if k not in kv]
    if missing:
        raise ConfigError(f"predict needs {' and '.join(f'{k}=...' for k in missing)}")
    csv = kv.pop("csv", None)
    table = predict(kv.pop("model"), kv.pop("source"), **kv)
    print(table.to_string(index=False, float_format="%.4f"))
    if (out := _csv_target(csv, Path("predictions.csv"), single="predictions.csv")) is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        table.to_csv(out, index=False)
        print(f"Wrote {out}")
    return 0


@command
def cmd_compare(words: list[str]) -> int:
    """One row per training run under RUNS_DIR (fmnist-yolo's and plain Ultralytics ones), best test top-1 first.

    fmnist-yolo compare [RUNS_DIR] [csv=FILE.csv|DIR] [skip_damaged=True]

    Columns: model, pretrained, epochs, imgsz, best epoch and val top-1, test top-1/top-5, macro-F1, ECE,
    parameters, train time, device, status. The table is written to RUNS_DIR/compare.csv unless csv= says where.
    skip_damaged=True lists a run with damaged files as "damaged" instead of stopping at it.
    """
    from .analysis.compare import compare
    from .config import RUNS_DIR

    pos, kv = _split(words, 1)
    _only(kv, {"csv", "skip_damaged", "runs_dir"}, "compare")
    runs_dir = Path(kv.pop("runs_dir", None) or (pos[0] if pos else RUNS_DIR))
    csv = _csv_target(kv.pop("csv", True), runs_dir / "compare.csv", single="compare.csv")
    table = compare(runs_dir, csv=csv, **kv)
    if table.empty:
        raise ConfigError(f"{runs_dir}: no training runs found")
    print(table.drop(columns=["path"]).to_string(index=False, float_format="%.4f"))
    print(f"{len(table)} runs" + (f"; table written to {table.attrs['csv']}" if "csv" in table.attrs else ""))
    return 0


@command
def cmd_report(words: list[str]) -> int:
    """Write RUN/report.md with its figures in RUN/report/: provenance, learning curves, confusion, per-class
    metrics, calibration, the most confidently misclassified test images, and the place among published results.

    fmnist-yolo report RUN [data=TREE] [csv=True] [top=25]

    data=TREE evaluates best.pt on another tree; csv=True also writes every table as CSV into RUN/report/;
    top=N shows the N most confident errors.
    """
    from .analysis.report import report

    pos, kv = _split(words, 1)
    _only(kv, {"data", "csv", "top", "run"}, "report")
    run = kv.pop("run", None) or (pos[0] if pos else None)
    if run is None:
        raise ConfigError("report needs a run directory: fmnist-yolo report RUN")
    path = report(run, **kv)
    print(f"Report written to {path}" + (f" (tables as CSV in {path.parent / 'report'})" if kv.get("csv") else ""))
    return 0


@command
def cmd_export(words: list[str]) -> int:
    """Export a trained model with Ultralytics and prove it: the exported model is evaluated on the test split and
    compared with the .pt, image by image (ONNX needs the export extra: pip install 'fmnist-yolo[export]').

    fmnist-yolo export model=RUN_DIR|WEIGHTS.pt [format=onnx] [data=TREE] [check=False] [Ultralytics key=value ...]

    Writes FILE.agreement.json beside the exported file and records it in the run's fmnist_yolo.json: identical
    top-1 labels (needs >= 99.9 %), top-1 of both (difference <= 0.05 points), the largest probability difference.
    The exported file works with `val` and `predict` (model=FILE.onnx).
    """
    from .deployment.export import export

    _, kv = _split(words)
    if "model" not in kv:
        raise ConfigError("export needs model=RUN_DIR_OR_WEIGHTS")
    result = export(kv.pop("model"), kv.pop("format", "onnx"), kv.pop("data", None), kv.pop("check", True), **kv)
    print(f"Exported {result['file']}")
    if "identical_top1" in result:
        print(f"test ({result['images']} images): identical top-1 {result['identical_top1']:.2%}, top-1 "
              f"{result['top1_exported']:.4f} exported vs {result['top1_pt']:.4f} .pt "
              f"({100 * result['top1_difference']:+.2f} points), largest probability difference "
              f"{result['max_probability_difference']:.2e}; recorded in {result['file']}.agreement.json")  # fmt: skip
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser: one subcommand per registered command, its docstring as its help."""
    parser = argparse.ArgumentParser(
        prog="fmnist-yolo",
        description="Ultralytics YOLO classification on Fashion-MNIST, offline and reproducible. Every option is "
        "key=value; `fmnist-yolo COMMAND --help` shows a command's.",
        epilog="Shared options: " + "; ".join(SHARED.values()),
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, fn in COMMANDS.items():
        doc = inspect.getdoc(fn) or ""
        p = sub.add_parser(name, help=doc.split("\n\n")[0].replace("\n", " "), description=doc,
                           formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
        p.add_argument("words", nargs="*", metavar="key=value")
    return parser


class _StderrHandler(logging.Handler):
    """The library's log lines on the current stderr, as plain text; a result line (extra={"result": True}) is left
    to the command, which prints it on stdout, so a terminal shows it once."""

    def emit(self, record: logging.LogRecord) -> None:
        if not getattr(record, "result", False):
            print(record.getMessage(), file=sys.stderr)


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    if issubclass(category, FmnistWarning) or "fmnist_yolo" in str(filename):
        text = str(message)
        print(text if text.startswith("WARNING") else f"WARNING: {text}", file=sys.stderr)
    else:
        print(warnings.formatwarning(message, category, filename, lineno, line).rstrip(), file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    """Run the command line; domain errors become `Error: ...` and exit code 1."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0] not in COMMANDS or {"-h", "--help"} & set(argv):
        build_parser().parse_args(argv)  # help, --version or a usage error: argparse prints it and exits
    command, words = argv[0], argv[1:]  # the words are ours to read: key=value
    log = logging.getLogger("fmnist_yolo")
    handler = _StderrHandler()
    log.addHandler(handler)
    level = log.level
    log.setLevel(logging.INFO)  # setLevel, not .level =: it clears the children's cached isEnabledFor answers
    shown = warnings.showwarning
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("default", FmnistWarning)
            warnings.showwarning = _show_warning
            return COMMANDS[command](words)
    except FmnistError as e:
        print(f"Error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("Interrupted.", file=sys.stderr)
        return 130
    finally:
        warnings.showwarning = shown
        log.removeHandler(handler)
        log.setLevel(level)


if __name__ == "__main__":
    sys.exit(main())
