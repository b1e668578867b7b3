"""`fmnist-yolo`: a thin command line over the library; each subcommand calls one function."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from . import __version__
from .config import DEFAULTS
from .errors import ConfigError, FmnistError


def cmd_prepare(args: argparse.Namespace) -> int:
    from .convert import prepare

    prepare(
        source=args.source, out=args.out, val=args.val, seed=args.seed,
        force=args.force, verify=not args.no_verify, workers=args.workers,
    )  # fmt: skip
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    import time

    from .check import check

    t0 = time.perf_counter()
    problems = check(args.tree, workers=args.workers)
    for row in problems.itertuples():
        print(f"{row.problem}: {Path(args.tree) / row.path} ({row.detail})")
    if len(problems):
        kinds = problems["problem"].value_counts()
        raise FmnistError(f"{args.tree}: {len(problems)} problems ({', '.join(f'{n} {k}' for k, n in kinds.items())}); "
                          f"`fmnist-yolo prepare --force --out {args.tree}` rebuilds it")  # fmt: skip
    print(f"{args.tree}: OK, every image matches the manifest ({time.perf_counter() - t0:.1f}s)")
    return 0


def parse_overrides(items: list[str]) -> dict:
    """`key=value` words into a dict, values typed the way Ultralytics' CLI types them."""
    from ultralytics.cfg import smart_value

    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"expected key=value, found {item!r}")
        out[key.strip()] = smart_value(value.strip())
    return out


def cmd_train(args: argparse.Namespace) -> int:
    from .train import train

    train(**parse_overrides(args.overrides))
    return 0


def cmd_tune(args: argparse.Namespace) -> int:
    from .tune import BEST, RESULTS, tune

    table = tune(**parse_overrides(args.overrides))
    out = Path(table["run"].iloc[0]).parent.parent
    print(table.drop(columns=["run", "error"]).to_string(index=False, float_format="%.4g"))
    print(f"{len(table)} trials; table in {out / RESULTS}; best configuration in {out / BEST} "
          f"(train with: fmnist-yolo train cfg={out / BEST})")  # fmt: skip
    return 0


def cmd_recipes(args: argparse.Namespace) -> int:
    from .train import recipe_path, recipes

    if args.name:  # the file alone, for `yolo classify train cfg=$(fmnist-yolo recipes strong)`
        print(recipe_path(args.name).resolve())
        return 0
    for name, path in recipes().items():
        about = path.read_text().splitlines()[0].lstrip("# ").removeprefix(f"{name}: ")
        print(f"{name:10s} {about}\n{'':10s} {path.resolve()}")
    return 0


def cmd_val(args: argparse.Namespace) -> int:
    from .evaluate import evaluate

    kw = parse_overrides(args.overrides)
    if "model" not in kw:
        raise ConfigError("val needs model=RUN_DIR_OR_WEIGHTS")
    result = evaluate(kw.pop("model"), kw.pop("split", "test"), kw.pop("data", None), **kw)
    print(f"{result.split}: top-1 {result.top1:.4f}, top-5 {result.top5:.4f}, macro-F1 {result.macro_f1:.4f}, "
          f"ECE {result.ece:.4f} ({len(result.predictions)} images, {result.weights}"
          f"{f', TTA {result.tta}' if result.tta else ''})")  # fmt: skip
    print(result.per_class.to_string(float_format="%.4f"))
    if args.csv:
        out = Path(args.csv)
        out.mkdir(parents=True, exist_ok=True)
        result.per_class.to_csv(out / "per_class.csv")
        result.confusion.to_csv(out / "confusion.csv")
        result.save(out / "predictions.csv")
        print(f"Wrote per_class.csv, confusion.csv, predictions.csv to {out}")
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    from .evaluate import predict

    kw = parse_overrides(args.overrides)
    missing = [k for k in ("model", "source") if k not in kw]
    if missing:
        raise ConfigError(f"predict needs {' and '.join(f'{k}=...' for k in missing)}")
    table = predict(kw.pop("model"), kw.pop("source"), **kw)
    print(table.to_string(index=False, float_format="%.4f"))
    if args.csv:
        table.to_csv(args.csv, index=False)
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    from .compare import compare

    table = compare(args.runs_dir)
    if table.empty:
        raise ConfigError(f"{args.runs_dir}: no training runs found")
    csv = Path(args.csv or Path(args.runs_dir) / "compare.csv")
    table.to_csv(csv, index=False)
    shown = table.drop(columns=["path"])
    print(shown.to_string(index=False, float_format="%.4f"))
    print(f"{len(table)} runs; table written to {csv}")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from .report import report
    from .train import check_keys

    kw = parse_overrides(args.overrides)
    check_keys(kw, {"data"})
    path = report(args.run, data=kw.get("data"), csv=args.csv, top=args.top)
    print(f"Report written to {path}" + (f" (tables as CSV in {path.parent / 'report'})" if args.csv else ""))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fmnist-yolo", description="Ultralytics YOLO classification on Fashion-MNIST, offline and reproducible."
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("prepare", help="convert the IDX files into the Ultralytics class-folder tree")
    p.add_argument("--source", metavar="DIR", help="directory with the four IDX files (default: $FMNIST_SOURCE, "
                   "datasets/raw/fashion-mnist, /usr/share/datasets/fashion-mnist, then download)")
    p.add_argument("--out", metavar="DIR", default=str(DEFAULTS.out), help="tree to write (default: %(default)s)")
    p.add_argument("--val", type=int, default=DEFAULTS.val, metavar="N",
                   help="stratified hold-out from train for model selection; 0 = train/test only (default: %(default)s)")
    p.add_argument("--seed", type=int, default=DEFAULTS.seed, help="seed of the hold-out (default: %(default)s)")
    p.add_argument("--force", action="store_true", help="rebuild even if the tree is up to date")
    p.add_argument("--no-verify", action="store_true", help="skip the official checksums (for your own IDX files)")
    p.add_argument("--workers", type=int, default=None, help="writer processes (default: all cores)")
    p.set_defaults(func=cmd_prepare)

    p = sub.add_parser("check", help="verify a prepared tree against its manifest (missing, extra, damaged images)",
                       description="Check every image of TREE against manifest.json and files.sha256: missing, extra, "
                       "truncated and corrupted files are listed by path, and the exit code is 1 if any. Ultralytics' "
                       "*.cache files are ignored. `prepare --force` repairs a damaged tree.")
    p.add_argument("tree", nargs="?", default=str(DEFAULTS.out), metavar="TREE", help="(default: %(default)s)")
    p.add_argument("--workers", type=int, default=None, help="reader processes (default: all cores)")
    p.set_defaults(func=cmd_check)

    kv = "Ultralytics-style key=value arguments"
    p = sub.add_parser("train", help="train (default: yolo11n-cls.pt, epochs=100, imgsz=28), then evaluate on test",
                       description="Train on the prepared tree with Ultralytics, select best.pt on val, evaluate it "
                       "once on test and write fmnist_yolo.json into the run directory. Any Ultralytics train "
                       "argument passes through, e.g. `fmnist-yolo train epochs=5 batch=64 device=cpu`; cfg=FILE.yaml "
                       "reads arguments from a file; strict_weights=True refuses the offline from-scratch fallback; "
                       "resume=RUN_DIR continues an interrupted run from its last.pt.")
    p.add_argument("overrides", nargs="*", metavar="key=value", help=kv)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("tune", help="hyperparameter search on Ray Tune (ASHA on val top-1)",
                       description="Search hyperparameters with Ray Tune: each trial is one `fmnist-yolo train` with "
                       "sampled lr0, lrf, momentum, weight_decay, warmup_epochs, dropout, fliplr, erasing, scale, "
                       "auto_augment (not with fast=True); ASHA stops weak trials early on val top-1; test is never touched. "
                       "Tune keys: iterations=N (trials), grace_period=E, address=RAY_ADDRESS (join a cluster), "
                       "gpu_per_trial=G, cpu_per_trial=C, space=FILE.yaml; every train key passes through, e.g. "
                       "`fmnist-yolo tune iterations=20 epochs=10 fraction=0.25 fast=True`. Writes tune_results.csv "
                       "and best_hyperparameters.yaml into runs/classify/tune (project=/name=). Needs the tune extra: "
                       "pip install 'fmnist-yolo[tune]'.")
    p.add_argument("overrides", nargs="*", metavar="key=value", help=kv)
    p.set_defaults(func=cmd_tune)

    p = sub.add_parser("recipes", help="list the shipped training recipes, or print one's YAML path",
                       description="Recipes are YAML files of train arguments. Use one with `fmnist-yolo train "
                       "recipe=NAME`, `make train RECIPE=NAME`, `fmnist_yolo.train(recipe=NAME)`, or Ultralytics' own "
                       "CLI: `yolo classify train cfg=$(fmnist-yolo recipes NAME) data=fashion-mnist`.")
    p.add_argument("name", nargs="?", metavar="NAME", help="print this recipe's file path")
    p.set_defaults(func=cmd_recipes)

    p = sub.add_parser("val", help="evaluate weights on a split: model=RUN_DIR_OR_WEIGHTS split=test|val",
                       description="Evaluate with Ultralytics' validator; prints top-1/top-5, macro-F1 and per-class "
                       "metrics. Example: fmnist-yolo val model=runs/classify/train split=test")
    p.add_argument("overrides", nargs="*", metavar="key=value", help=kv)
    p.add_argument("--csv", metavar="DIR", help="also write per_class.csv, confusion.csv and predictions.csv to DIR")
    p.set_defaults(func=cmd_val)

    p = sub.add_parser("predict", help="classify images: model=... source=IMAGE_OR_DIR",
                       description="Classify an image or a directory; prints file, class and confidence.")
    p.add_argument("overrides", nargs="*", metavar="key=value", help=kv)
    p.add_argument("--csv", metavar="FILE", help="also write the table as CSV")
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser("compare", help="one row per run under RUNS_DIR, best test top-1 first; writes CSV",
                       description="Tabulate every training run under RUNS_DIR (fmnist-yolo's and plain Ultralytics "
                       "ones): model, pretrained, epochs, imgsz, best val top-1, test top-1/top-5, macro-F1, "
                       "parameters, train time, device.")
    p.add_argument("runs_dir", nargs="?", default="runs", metavar="RUNS_DIR", help="(default: %(default)s)")
    p.add_argument("--csv", metavar="FILE", help="where to write the table (default: RUNS_DIR/compare.csv)")
    p.set_defaults(func=cmd_compare)

    p = sub.add_parser("report", help="write RUN/report.md: provenance, curves, confusion, errors, benchmark",
                       description="Write RUN/report.md with PNG figures in RUN/report/: provenance summary, learning "
                       "curves, confusion heatmap, per-class table, the most confidently misclassified test images, "
                       "and the run's place among published Fashion-MNIST results. data=TREE re-evaluates on TREE.")
    p.add_argument("run", metavar="RUN", help="a run directory, e.g. runs/classify/train")
    p.add_argument("overrides", nargs="*", metavar="data=TREE", help="evaluate on this tree instead")
    p.add_argument("--csv", action="store_true", help="also write every table as CSV into RUN/report/")
    p.add_argument("--top", type=int, default=25, metavar="N", help="misclassified images to show (default: 25)")
    p.set_defaults(func=cmd_report)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the command line; domain errors become `Error: ...` and exit code 1."""
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except FmnistError as e:
        print(f"Error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("Interrupted.", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
