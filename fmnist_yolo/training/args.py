"""Train arguments: recipes, cfg= files and explicit values resolved in that order, every key and value checked."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..config import (
    DEFAULT_RECIPE,
    DEFAULTS,
    OWN_TRAIN_KEYS,
    RECIPES_DIR,
    check_options,
    options,
    out_of_range,
    unknown,
    unknown_key,
)
from ..data.tree import MANIFEST, read_manifest
from ..errors import ConfigError, warn
from ..files import read_yaml


def valid_keys() -> set[str]:
    """Every key `train` accepts: Ultralytics' arguments plus fmnist-yolo's own."""
    from ultralytics.cfg import DEFAULT_CFG_DICT

    return set(DEFAULT_CFG_DICT) | set(OWN_TRAIN_KEYS)


def check_keys(args: dict[str, Any], allowed: set[str], where: str = "argument") -> None:
    """Raise ConfigError for the first unknown key, suggesting the closest valid one."""
    unknown_key(args, allowed, where, otherwise=" (see `yolo cfg` for Ultralytics' arguments)")


def read_args_yaml(path: str | Path, allowed: set[str]) -> dict[str, Any]:
    """Train arguments from a YAML mapping, every key checked against `allowed`."""
    args = read_yaml(path, ConfigError, "argument file") or {}
    if not isinstance(args, dict):
        raise ConfigError(f"{path}: expected a mapping of arguments, found {type(args).__name__}")
    check_keys(args, allowed, where=f"argument in {path}")
    return args


def recipes() -> dict[str, Path]:
    """Shipped recipes: name -> YAML file."""
    return {p.stem: p for p in sorted(RECIPES_DIR.glob("*.yaml"))}


def recipe_path(recipe: str | Path) -> Path:
    """A shipped recipe's file by name, or a recipe YAML given by path."""
    shipped = recipes()
    if str(recipe) in shipped:
        return shipped[str(recipe)]
    if Path(recipe).suffix in (".yaml", ".yml") and Path(recipe).is_file():
        return Path(recipe)
    raise ConfigError(unknown(str(recipe), shipped, "recipe", f" (shipped: {', '.join(shipped)}; or a YAML path)"))


def resolve_args(overrides: dict[str, Any]) -> dict[str, Any]:
    """The default recipe < the chosen recipe < cfg= file < explicit overrides; keys, types and ranges checked.

    The default recipe's file is the one source of model, epochs and imgsz; fmnist-yolo's own keys default to
    `Config`; everything else is Ultralytics' default, left unset here.
    """
    from ultralytics.cfg import check_cfg

    overrides = dict(overrides)
    allowed = valid_keys()
    check_keys(overrides, allowed)
    cfg = overrides.pop("cfg", None)
    from_file = read_args_yaml(cfg, allowed - {"cfg"}) if cfg else {}
    recipe = overrides.pop("recipe", None) or from_file.pop("recipe", None) or DEFAULTS.recipe
    base = read_args_yaml(recipe_path(DEFAULT_RECIPE), allowed - {"cfg", "recipe"})
    from_recipe = read_args_yaml(recipe_path(recipe), allowed - {"cfg", "recipe"})
    own = {k: getattr(DEFAULTS, k) for k in OWN_TRAIN_KEYS}
    args = {**own, **base, "data": None, **from_recipe, **from_file, **overrides, "recipe": str(recipe)}
    try:
        check_cfg({k: v for k, v in args.items() if k not in OWN_TRAIN_KEYS and v is not None})
    except (TypeError, ValueError, SyntaxError) as e:
        raise ConfigError(str(e).splitlines()[0].strip()) from None
    check_options("train", args)
    check_values(args)
    return args  # `fast` stays None where no source set it: settle_loader decides once the tree is known


def choose_loader(args: dict[str, Any], tree: Path | None = None) -> tuple[bool, str | None]:
    """(fast, why): the loader a run trains with, and where fast= was left unset and the fast path cannot serve, why
    not. Unset means the fast path wherever it serves: it trains stock's optimizer steps (issue 28's runs at length,
    benchmarks/RESULTS.md) in 0.5x stock's time on 2 CPU cores and far less on a GPU. True and False are kept as
    given (True where it cannot serve is check_fast's error); fused_bn=True asks for the fast path."""
    if args.get("fast") is not None:
        return bool(args["fast"]), None
    blocker = fast_blocker(args.get("device"), args.get("time"))
    if args.get("fused_bn"):
        if blocker:
            raise ConfigError(f"fused_bn=True needs the fast path, and {blocker}")
        return True, None
    if blocker:
        return False, blocker
    if caveat := fast_caveat(args.get("auto_augment")):
        return False, caveat
    if tree is not None and read_manifest(tree) is None:  # a tree of the user's own: any size, any colours
        return False, (f"{tree} has no {MANIFEST} from `fmnist-yolo prepare` (the fast path holds Fashion-MNIST's "
                       "28x28 greyscale images in memory)")  # fmt: skip
    return True, None


def settle_loader(args: dict[str, Any], tree: Path | None = None) -> None:
    """Set args["fast"] to the loader the run trains with (choose_loader), saying in one line why where it is stock."""
    args["fast"], why = choose_loader(args, tree)
    if why:
        warn_stock(why)


def warn_stock(why: str) -> None:
    """The one line a run whose fast= was left unset gives when it trains with the stock loader."""
    warn(f"training with the stock loader: {why} (fast=False chooses it without this line)")


def _numeric_value(args: dict, key: str) -> float | None:
    value = args.get(key)
    if value is None or isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)


# key -> (test, the accepted range as said in the message); Ultralytics' check_cfg checks types and 0..1 fractions
RANGES = {
    "epochs": (lambda v: v >= 1 and v == int(v), "an integer >= 1"),
    "imgsz": (lambda v: 1 <= v <= 8192 and v == int(v), "an integer from 1 to 8192"),
    "batch": (lambda v: v == -1 or 0 < v < 1 or (v >= 1 and v == int(v)),
              "an integer >= 1, -1 (AutoBatch) or a fraction of GPU memory in (0, 1)"),
    "fraction": (lambda v: 0 < v <= 1, "in (0, 1]"),
    "lr0": (lambda v: v > 0, "> 0"),
    "lrf": (lambda v: v > 0, "in (0, 1]"),
    "nbs": (lambda v: v >= 1, ">= 1"),
    "workers": (lambda v: v >= 0, ">= 0"),
    "patience": (lambda v: v >= 0, ">= 0"),
    "warmup_epochs": (lambda v: v >= 0, ">= 0"),
    "save_period": (lambda v: v >= -1, ">= 1, or -1 (off)"),
    "scale": (lambda v: 0 <= v < 1, "in [0, 1)"),
    "dropout": (lambda v: 0 <= v < 1, "in [0, 1)"),
    "time": (lambda v: v > 0, "> 0 (hours)"),
}  # fmt: skip


def check_values(args: dict[str, Any]) -> None:
    """ConfigError naming the key and its accepted range for an Ultralytics value out of range, or a combination
    that cannot work."""
    for key, (ok, accepted) in RANGES.items():
        value = _numeric_value(args, key)
        if value is not None and not ok(value):
            raise out_of_range(key, str(args[key]), accepted)
    imgsz = args.get("imgsz")
    if isinstance(imgsz, (list, tuple)):
        raise ConfigError(f"imgsz={imgsz}: classification trains square images; give one integer")
    if imgsz is not None and (isinstance(imgsz, bool) or not isinstance(imgsz, (int, float))):
        raise ConfigError(f"imgsz={imgsz!r} is not a number: imgsz must be {RANGES['imgsz'][1]}")
    # fmnist-yolo's own keys' types and choices (mlflow, select_on, fused_bn, ...) are the schema's: check_options
    if args.get("fused_bn") and args.get("fast") is False:
        raise ConfigError("fused_bn=True changes how fast=True normalises its fused chunks; it needs fast=True")
    if args.get("fast"):
        check_fast(args.get("device"), args.get("time"))  # its warning (auto_augment) is the fast trainer's to give


def check_select_on(select_on: Any) -> None:
    """ConfigError unless `select_on` names a rule for choosing best.pt (the schema's choices)."""
    options("train")["select_on"].check(select_on)  # the schema's rule, for trainers reached without train's check


def check_fast(device: Any, time: Any, auto_augment: Any = None) -> str | None:
    """ConfigError where fast=True cannot serve: on several devices (Ultralytics' DDP) or with a time= budget; else
    the warning to give where it serves with a difference (an auto_augment policy it does not apply), or None.

    Checked when the arguments are resolved and again by the fast trainer (a resume, or the Python API).
    """
    if why := fast_blocker(device, time):
        raise ConfigError(f"fast=True: {why}; drop fast=True for the stock loader")
    if caveat := fast_caveat(auto_augment):
        return (f"fast=True trains stock's optimizer steps, gradients and schedule, but {caveat}. Drop fast=True for "
                "the stock loader.")  # fmt: skip
    return None


def fast_blocker(device: Any, time: Any) -> str | None:
    """Why the fast path cannot train this run at all (several devices, a time= budget), or None."""
    if device_count(device) > 1:  # named as parse_device writes it: the same from the CLI, the API and the trainer
        return f"the fast path trains on one device, found device={','.join(devices(device))} (multi-GPU DDP)"
    if time:
        return "the fast path plans its optimizer steps by epoch: give epochs=, not time="
    return None


def fast_caveat(auto_augment: Any) -> str | None:
    """What the fast path would train differently from stock (an auto_augment policy it does not apply), or None."""
    if auto_augment and auto_augment != "randaugment":
        return (f"the fast path does not apply auto_augment={auto_augment} (stock applies it per image; randaugment "
                "it does)")  # fmt: skip
    return None


def devices(device: Any) -> list[str]:
    """The devices a `device=` value names, as Ultralytics' parse_device reads it ("cuda:", brackets and spaces
    dropped): "0,1" / [0, 1] / "cuda:0,1" -> ["0", "1"], "cpu" -> ["cpu"], 0 -> ["0"], None or "" -> [].

    Not parse_device itself: it would resolve "-1" (an idle GPU) by querying the GPUs while arguments are checked.
    """
    text = "" if device is None else str(device).lower()
    for drop in ("cuda:", "(", ")", "[", "]", "'", " "):
        text = text.replace(drop, "")
    return [p for p in text.split(",") if p]


def device_count(device: Any) -> int:
    """How many devices a `device=` value names: 0,1 / "0,1" / [0, 1] are two (Ultralytics then trains with DDP)."""
    return max(len(devices(device)), 1)
