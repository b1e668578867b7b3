"""The single source of fmnist-yolo's defaults and the Fashion-MNIST facts it relies on.

Every key=value option fmnist-yolo adds is declared once, in OPTIONS: its default, the types and range it accepts,
the commands that take it and its help line. The CLI's help, the checks and their one-line errors, and the library's
defaults are drawn from it; Ultralytics' own keys stay checked against Ultralytics' own configuration.
Paths are relative to the current directory, like Ultralytics' own `runs/`.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, make_dataclass
from pathlib import Path
from typing import Any

from .errors import ConfigError

# Label order of the official release; folder names sort in this order because of the digit prefix,
# and Ultralytics numbers classes by plain string sort of the folder names.
CLASS_NAMES = (
    "tshirt_top", "trouser", "pullover", "dress", "coat",
    "sandal", "shirt", "sneaker", "bag", "ankle_boot",
)  # fmt: skip
CLASS_DIRS = tuple(f"{i}_{name}" for i, name in enumerate(CLASS_NAMES))

# The four official files: key -> (file name without .gz, official .gz MD5, SHA-256 of the IDX payload).
# Recompressed copies (Debian's dataset-fashion-mnist) differ in the MD5 and agree in the payload hash.
SOURCE_FILES = {
    "train_images": ("train-images-idx3-ubyte", "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
                     "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888"),
    "train_labels": ("train-labels-idx1-ubyte", "25c81989df183df01b3e8a0aad5dffbe",
                     "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9"),
    "test_images": ("t10k-images-idx3-ubyte", "bef4ecab320f06d8554ea6380940ec79",
                    "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b"),
    "test_labels": ("t10k-labels-idx1-ubyte", "bb300cfdad3c16e7a12a480ee83cd310",
                    "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34"),
}  # fmt: skip
MIRRORS = (
    "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
    "https://github.com/zalandoresearch/fashion-mnist/raw/master/data/fashion/",
)
DEBIAN_DIR = Path("/usr/share/datasets/fashion-mnist")  # apt-get install dataset-fashion-mnist
SOURCE_ENV = "FMNIST_SOURCE"  # environment variable naming a source directory


RUNS_DIR = Path("runs")  # the project's runs, whatever Ultralytics' own runs_dir setting says
WEIGHTS_DIR = Path("weights")  # the project's pretrained weights, looked up before Ultralytics' weights_dir
RECIPES_DIR = Path(__file__).parent / "training" / "recipes"  # shipped recipes: YAML files of train arguments
DEFAULT_RECIPE = "default"  # the Ultralytics recipe; its file is the one source of model, epochs and imgsz


TREE = Path("datasets/fashion-mnist")  # the prepared class-folder tree: prepare's out=, every command's data=
RAW_DIR = Path("datasets/raw/fashion-mnist")  # project copy of the IDX files; downloads land here


@dataclass(frozen=True)
class Option:
    """One key=value option: its default, what it accepts, the commands that take it and its help line."""

    key: str
    default: Any
    help: str  # one line; what None means when the default is None
    commands: tuple[str, ...]
    kinds: tuple[type, ...] = ()  # the types it accepts (empty: any; the library checks it)
    ok: Callable[[Any], bool] | None = None  # the range, on a value of an accepted type (not None)
    accepted: str = ""  # the range in words, for the error line
    choices: tuple = ()  # the values it accepts, when a list says it
    metavar: str = ""  # how the help writes its value (default: the default)
    positional: bool = False  # also the command's first word without key=
    required: bool = False  # the command cannot run without it

    def check(self, value: Any) -> None:
        """ConfigError naming the key when `value` has a type it does not accept or lies outside its range."""
        if self.choices:
            if not any(value == c and type(value) is type(c) for c in self.choices):
                raise ConfigError(f"{self.key} must be one of {', '.join(map(str, self.choices))}, found {value!r}")
            return
        if self.kinds and (not isinstance(value, self.kinds) or (isinstance(value, bool) and bool not in self.kinds)):
            raise ConfigError(f"{self.key}={value!r}: expected {_kinds_in_words(self.kinds)}")
        if self.ok is not None and value is not None and not self.ok(value):
            raise out_of_range(self.key, repr(value), self.accepted)

    def usage(self) -> str:
        """How a command line writes it: `key=VALUE` (VALUE: the default where no metavar says more), or `VALUE`."""
        shown = self.metavar or str(self.default)
        return shown if self.positional else f"{self.key}={shown}"

    def line(self) -> str:
        """The help line: what it does, and its default where usage() does not already show it."""
        default = f" (default {self.default})" if self.metavar and self.default is not None else ""
        return f"{self.help}{default}"


def _kinds_in_words(kinds: tuple[type, ...]) -> str:
    """(int, None) -> "an integer or nothing"; (bool,) -> "True or False"."""
    words = {int: ["an integer"], float: ["a number"], bool: ["True", "False"], str: ["a string"], Path: ["a path"],
             dict: ["a mapping"], type(None): ["nothing"]}  # fmt: skip
    drop = ({str} if Path in kinds else set()) | ({int} if float in kinds else set())
    said = [w for k in kinds if k not in drop for w in words.get(k, [k.__name__])]
    return said[0] if len(said) == 1 else f"{', '.join(said[:-1])} or {said[-1]}"


_PATH, _MAYBE_PATH = (str, Path), (str, Path, type(None))
_COUNT = {"kinds": (int, type(None)), "ok": lambda v: v >= 1, "accepted": "an integer >= 1"}
_CSV = (bool, str, Path, type(None))

OPTIONS: tuple[Option, ...] = (
    # --- data preparation ---
    Option("source", None, f"the four IDX files (default: ${SOURCE_ENV}, {RAW_DIR}, {DEBIAN_DIR}, then a download "
           "from the official mirrors)", ("prepare",),
           _MAYBE_PATH, metavar="DIR"),
    Option("out", TREE, "the tree to write", ("prepare",), _MAYBE_PATH, metavar="DIR"),
    Option("val_size", 5000, "stratified hold-out from the 60k train images for model selection (500/class); "
           "0 = train/test only", ("prepare",), (int,), lambda v: v >= 0, "an integer >= 0"),
    Option("split_seed", 0, "seed of the val hold-out (not Ultralytics' training seed)", ("prepare",), (int,)),
    Option("force", False, "True: rebuild even when the tree is up to date", ("prepare",), (bool,)),
    Option("verify", True, "False: skip the official checksums (for your own IDX files)", ("prepare",), (bool,)),
    Option("workers", None, "processes (default: all cores)", ("prepare", "check"), **_COUNT, metavar="N"),
    Option("link", None, "a datasets_dir link for `yolo ... data=fashion-mnist` (default: the default tree's only; "
           "False: none; True: this tree's too)", ("prepare",), (bool, type(None)), metavar="True|False"),
    Option("tree", TREE, "the prepared tree to check", ("check",), _PATH, metavar="TREE", positional=True),
    # --- training: the keys fmnist-yolo adds to Ultralytics' (any Ultralytics train key passes through) ---
    Option("recipe", DEFAULT_RECIPE, "a shipped recipe (`fmnist-yolo recipes`) or a recipe YAML path",
           ("train", "tune"), _PATH),
    Option("fast", None, "the in-memory data path with batched augmentation on the device, stock's optimizer steps "
           "(default: wherever it serves, else the stock loader with a line saying why; False: Ultralytics' stock "
           "loader; True: an error where it cannot serve)", ("train", "tune"), (bool, type(None)),
           metavar="True|False"),
    Option("fused_bn", False, "with fast=True: BatchNorm over each fused step's images, not per micro-batch as "
           "stock (faster)", ("train", "tune"), (bool,)),
    Option("select_on", "top1_top5", "best.pt = the epoch with the best val top1_top5 (Ultralytics' mean of top-1 "
           "and top-5) or top1", ("train", "tune"), choices=("top1_top5", "top1")),
    Option("strict_weights", False, "True: missing pretrained weights is an error, not a from-scratch fallback",
           ("train", "tune"), (bool,)),
    Option("evaluate_test", True, "False: skip evaluating best.pt once on test after training (for sweeps)",
           ("train",), (bool,)),
    Option("mlflow", None, "track the run in MLflow (default: when mlflow is installed and Ultralytics' setting "
           "allows)", ("train", "tune"), (bool, type(None)), metavar="True|False"),
    # --- reproduce ---
    Option("run", None, "the run directory to train again from its record", ("reproduce",), _PATH, metavar="RUN",
           positional=True, required=True),
    Option("name", None, "the new run's name (default RUN-reproduce)", ("reproduce",), (str, type(None)),
           metavar="NAME"),
    Option("device", None, "train there instead of on the recorded device", ("reproduce",), metavar="D"),
    Option("epochs", None, "reproduce the first N epochs, on the recorded schedule (default: all)", ("reproduce",),
           **_COUNT, metavar="N"),
    Option("strict", False, "True: refuse when a version differs from the record, instead of warning",
           ("reproduce",), (bool,)),
    # --- tune: every train key, and these ---
    Option("iterations", 10, "trials", ("tune",), (int,), lambda v: v >= 1, "an integer >= 1"),
    Option("grace_period", 1, "epochs before ASHA may stop a trial", ("tune",), (int,), lambda v: v >= 1,
           "an integer >= 1"),
    Option("space", None, "a search space replacing the default one (key: [kind, low, high])", ("tune",),
           (str, Path, dict, type(None)), metavar="FILE.yaml"),
    Option("address", None, "an existing Ray cluster to join (auto or ray://host:10001; default a local Ray)",
           ("tune",), (str, type(None)), metavar="auto"),
    Option("gpu_per_trial", 0, "GPUs per trial", ("tune",), (int, float), lambda v: v >= 0, ">= 0"),
    Option("cpu_per_trial", 0, "CPUs per trial; 0: the CPUs of the smallest node (locally: all cores)", ("tune",),
           (int, float), lambda v: v >= 0, ">= 0"),
    Option("name", "tune", "the search's directory under project= (default runs/classify)", ("tune",),
           (str, type(None))),
    # --- val, predict, export: any Ultralytics key of the mode passes through ---
    Option("model", None, "a run directory (its weights/best.pt) or a weights file", ("val", "predict", "export"),
           _PATH, metavar="RUN_DIR|WEIGHTS.pt", required=True),
    Option("source", None, "an image or a directory of images", ("predict",), _PATH, metavar="IMAGE_OR_DIR",
           required=True),
    Option("split", "test", "the split to evaluate; decide on val, report test once", ("val",),
           choices=("test", "val", "train")),
    Option("data", None, f"the prepared tree (default {TREE}, prepared when missing)",
           ("val", "export", "report", "reproduce"), _MAYBE_PATH, metavar="TREE"),
    Option("tta", False, "True (flip): average each image's class probabilities with its mirror image's; "
           "flip+shift: also 2-pixel shifts", ("val",), (bool, str, type(None)), metavar="True|flip+shift"),
    Option("csv", None, "write per_class.csv, confusion.csv and predictions.csv into DIR (csv=True: here)",
           ("val",), _CSV, metavar="DIR"),
    Option("csv", None, "also write the table as CSV: a .csv file or a directory (csv=True: predictions.csv)",
           ("predict",), _CSV, metavar="FILE.csv|DIR"),
    Option("format", "onnx", "an Ultralytics export format (onnx, torchscript, ...)", ("export",), (str,)),
    Option("check", True, "False: do not evaluate the exported model on test against the .pt", ("export",), (bool,)),
    # --- compare, report ---
    Option("runs_dir", RUNS_DIR, "the directory of runs", ("compare",), _PATH, metavar="RUNS_DIR", positional=True),
    Option("csv", True, "where the table goes: a .csv file or a directory (True: RUNS_DIR/compare.csv; False: not "
           "written)", ("compare",), _CSV, metavar="FILE.csv|DIR"),
    Option("skip_damaged", False, "True: list a run with damaged files as damaged instead of stopping at it",
           ("compare",), (bool,)),
    Option("run", None, "the run directory", ("report",), _PATH, metavar="RUN", positional=True, required=True),
    Option("csv", False, "True: also write every table as CSV into RUN/report/", ("report",), (bool,)),
    Option("top", 25, "how many of the most confidently misclassified test images to show", ("report",), (int,),
           lambda v: v >= 0, "an integer >= 0"),
)  # fmt: skip


def options(command: str) -> dict[str, Option]:
    """The options `command` takes, by key, in the order declared."""
    return {o.key: o for o in OPTIONS if command in o.commands}


def default(command: str, key: str) -> Any:
    """The default of `key` in `command`: the one declaration the library's signatures and the CLI read."""
    return options(command)[key].default


def check_options(command: str, values: dict[str, Any]) -> None:
    """ConfigError (one line naming the key) for the first value of `command`'s options out of type or range; keys
    the command does not declare are left to its other checks (unknown_key, Ultralytics' configuration)."""
    declared = options(command)
    for key, value in values.items():
        if key in declared:
            declared[key].check(value)


def unknown_key(keys: Iterable[str], allowed: Iterable[str], what: str = "argument", otherwise: str = "") -> None:
    """ConfigError for the first key not in `allowed`: `unknown WHAT 'KEY'; did you mean 'CLOSEST'?`, or `OTHERWISE`
    when nothing is close (default: the list of what is allowed)."""
    allowed = set(allowed)
    for key in keys:
        if key not in allowed:
            raise ConfigError(unknown(key, allowed, what, otherwise))


def out_of_range(key: str, written: str, accepted: str) -> ConfigError:
    """The one wording of a value out of its range, for fmnist-yolo's options and Ultralytics' keys alike."""
    return ConfigError(f"{key}={written} is out of range: {key} must be {accepted}")


def unknown(key: str, allowed: Iterable[str], what: str, otherwise: str = "") -> str:
    """`unknown WHAT 'KEY'; did you mean 'CLOSEST'?`, or with `OTHERWISE` (default: what is allowed) when nothing is
    close: the one wording of an unknown name, whatever names it (a key, a recipe)."""
    allowed = set(allowed)
    close = difflib.get_close_matches(key, allowed, n=1, cutoff=0.6)
    hint = (
        f"; did you mean '{close[0]}'?" if close else otherwise or f"; it takes {', '.join(sorted(allowed)) or 'none'}"
    )
    return f"unknown {what} '{key}'{hint}"


def help_lines(command: str, width: int = 120) -> list[str]:
    """The option lines of `command`'s help, one option each (wrapped at `width`), positional ones first."""
    import textwrap

    declared = sorted(options(command).values(), key=lambda o: not o.positional)
    column = max((len(o.usage()) for o in declared), default=0) + 4
    return [textwrap.fill(o.line(), width, initial_indent=f"  {o.usage():{column - 2}s}",
                          subsequent_indent=" " * column, break_on_hyphens=False) for o in declared]  # fmt: skip


# Config: a field per option with a value for a default, the same in every command that takes it (DEFAULTS.out, ...)
_DEFAULTS: dict[str, list] = {}
for _option in OPTIONS:
    _DEFAULTS.setdefault(_option.key, []).append(_option.default)
Config = make_dataclass(
    "Config",
    [(key, Any, field(default=found[0])) for key, found in _DEFAULTS.items()
     if found.count(found[0]) == len(found) and (found[0] is not None or key in options("train"))]
    + [("raw_dir", Path, field(default=RAW_DIR))],
    frozen=True,
)  # fmt: skip
Config.__doc__ = """fmnist-yolo's own defaults, drawn from OPTIONS. The training recipe itself (model, epochs,
imgsz) lives in the default recipe's YAML file and everything else is Ultralytics' default."""
DEFAULTS = Config()
OWN_TRAIN_KEYS = tuple(options("train"))  # train keys Ultralytics lacks
