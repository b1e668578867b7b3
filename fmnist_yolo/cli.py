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

from .config import DEFAULTS, check_options, default, help_lines, options, unknown_key
from .errors import ConfigError, FmnistError, FmnistWarning
from .version import __version__

COMMANDS: dict[str, Callable] = {}
# Commands that also pass Ultralytics' own keys of a mode through (checked against Ultralytics' configuration)
PASSES = {"train": "train", "tune": "train", "val": "val", "predict": "predict", "export": "export"}


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


def _args(command: str, words: list[str]) -> dict:
    """The command's key=value words (and its positional word) as a dict, checked against the options it declares
    (config.OPTIONS): unknown keys (unless it passes Ultralytics' keys through), types and ranges, required ones."""
    declared = options(command)
    positional = [o.key for o in declared.values() if o.positional]
    pos, kv = _split(list(words), len(positional))
    for key, value in zip(positional, pos):
        kv.setdefault(key, value)
    if command not in PASSES:
        unknown_key(kv, declared, f"{command} argument")
    check_options(command, kv)
    missing = [o for o in declared.values() if o.required and kv.get(o.key) is None]
    if missing:
        raise ConfigError(f"{command} needs " + " and ".join(
            f"{o.usage()} ({o.help})" if o.positional else o.usage() for o in missing))  # fmt: skip
    return kv


def usage(command: str) -> str:
    """The command's synopsis, drawn from its declared options."""
    import textwrap

    declared = sorted(options(command).values(), key=lambda o: not o.positional)
    words = [o.usage() if o.required else f"[{o.usage()}]" for o in declared]
    if command in PASSES:
        words.append(f"[Ultralytics {PASSES[command]} key=value ...]")
    head = f"fmnist-yolo {command} "
    return textwrap.fill(" ".join(words), 120, initial_indent=head, subsequent_indent=" " * len(head),
                         break_on_hyphens=False, break_long_words=False)  # fmt: skip


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
    """Convert the four Fashion-MNIST IDX files into the Ultralytics class-folder tree."""
    from .data.prepare import prepare

    prepare(**_args("prepare", words))
    return 0


@command
def cmd_check(words: list[str]) -> int:
    """Verify a prepared tree against its manifest: missing, extra, truncated and corrupted images, by path.

    Exit code 1 when anything is wrong; Ultralytics' *.cache files are ignored. `fmnist-yolo prepare force=True`
    repairs the tree.
    """
    import time

    from .data.check import check
    from .data.tree import repair_hint

    kv = _args("check", words)
    tree = Path(kv.pop("tree", DEFAULTS.tree))
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
    """Train (default: the `default` recipe, Ultralytics' own: `fmnist-yolo recipes default`), select best.pt on
    val, evaluate it once on test, and record the provenance in RUN/fmnist_yolo.json.

    Any Ultralytics train argument passes through (epochs=5 batch=64 device=cpu ...); two of them mean more here:
    cfg=FILE.yaml takes arguments from a file (the command line wins), and resume=RUN_DIR continues an interrupted
    run from its last.pt (resume=True: the latest run).
    """
    from .training.train import train

    run = train(**_args("train", words))
    print(run.result_line())
    return 0


@command
def cmd_reproduce(words: list[str]) -> int:
    """Train a run again from its record alone (RUN/fmnist_yolo.json), into a new run beside it, and compare the two:
    RUN-reproduce/reproduction.json holds the verdict (identical, equal within rounding, different).

    The tree must be the recorded one by content (rebuilt with the recorded options when the recorded source
    files are at hand); every version that differs from the record is named in one warning (strict=True refuses).
    epochs=N reproduces the first N epochs on the recorded schedule; a recorded interruption and resume is
    replayed. Exit code 1 when the verdict is different.
    """
    from .reproduction import reproduce

    kv = _args("reproduce", words)
    result = reproduce(kv.pop("run"), **kv)
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

    The default space (fmnist_yolo.training.tune.SPACE) samples the learning-rate schedule, momentum, weight decay,
    warm-up, dropout and augmentation (auto_augment only with the stock loader); trials never see test. Writes
    tune_results.csv and best_hyperparameters.yaml (a train cfg=) into runs/classify/tune. Needs the tune extra:
    pip install 'fmnist-yolo[tune]'.
    """
    from .training.tune import BEST_CONFIG, TUNE_TABLE, tune

    table = tune(**_args("tune", words))
    out = Path(table.attrs["dir"])
    print(table.drop(columns=["run", "error"]).to_string(index=False, float_format="%.4g"))
    print(f"{len(table)} trials; table in {out / TUNE_TABLE}; best configuration in {out / BEST_CONFIG} "
          f"(train with: fmnist-yolo train cfg={out / BEST_CONFIG})")  # fmt: skip
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
    unknown_key(kv, (), "recipes argument")
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

    Decide tta= on split=val, then report test once.
    """
    from .evaluation.evaluate import evaluate

    kv = _args("val", words)
    csv = kv.pop("csv", default("val", "csv"))
    result = evaluate(kv.pop("model"), **kv)
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
    """Classify an image or a directory of images: file, class and confidence per image."""
    from .evaluation.predict import predict

    kv = _args("predict", words)
    csv = kv.pop("csv", default("predict", "csv"))
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

    Columns: model, pretrained, epochs, imgsz, best epoch and val top-1, test top-1/top-5, macro-F1, ECE,
    parameters, train time, device, status.
    """
    from .analysis.compare import compare

    kv = _args("compare", words)
    runs_dir = Path(kv.pop("runs_dir", DEFAULTS.runs_dir))
    csv = _csv_target(kv.pop("csv", default("compare", "csv")), runs_dir / "compare.csv", single="compare.csv")
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

    data=TREE evaluates best.pt on another tree; its report is kept apart from the run's own.
    """
    from .analysis.report import report

    kv = _args("report", words)
    path = report(kv.pop("run"), **kv)
    print(f"Report written to {path}" + (f" (tables as CSV in {path.parent / 'report'})" if kv.get("csv") else ""))
    return 0


@command
def cmd_export(words: list[str]) -> int:
    """Export a trained model with Ultralytics and prove it: the exported model is evaluated on the test split and
    compared with the .pt, image by image (ONNX needs the export extra: pip install 'fmnist-yolo[export]').

    Writes FILE.agreement.json beside the exported file and records it in the run's fmnist_yolo.json: identical
    top-1 labels (needs >= 99.9 %), top-1 of both (difference <= 0.05 points), the largest probability difference.
    The exported file works with `val` and `predict` (model=FILE.onnx).
    """
    from .deployment.export import export

    kv = _args("export", words)
    result = export(kv.pop("model"), **kv)
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
        "key=value and means the same in every command that takes it; `fmnist-yolo COMMAND --help` lists a command's.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, fn in COMMANDS.items():
        doc = inspect.getdoc(fn) or ""
        summary, _, prose = doc.partition("\n\n")
        lines = help_lines(name)
        parts = [summary, usage(name), prose] + (["Options:\n" + "\n".join(lines)] if lines else [])
        text = "\n\n".join(p for p in parts if p)
        p = sub.add_parser(name, help=doc.split("\n\n")[0].replace("\n", " "), description=text,
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
