"""`fmnist-yolo`: a thin command line over the library; each subcommand calls one function."""

from __future__ import annotations

import argparse
import sys

from . import __version__
from .config import DEFAULTS
from .errors import FmnistError


def cmd_prepare(args: argparse.Namespace) -> int:
    from .convert import prepare

    prepare(
        source=args.source, out=args.out, val=args.val, seed=args.seed,
        force=args.force, verify=not args.no_verify, workers=args.workers,
    )  # fmt: skip
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
