"""Reading `.pt` checkpoints: trust, and one line naming the file when one is damaged or of another kind."""

from __future__ import annotations

from pathlib import Path

from .errors import RunError, warn

_WARNED: set[Path] = set()


def trusted_dirs() -> list[Path]:
    """Where checkpoints are trusted: the project's runs/ and weights/, and Ultralytics' runs_dir and weights_dir."""
    from ultralytics.utils import SETTINGS

    return [Path(d).resolve() for d in ("runs", "weights", SETTINGS["runs_dir"], SETTINGS["weights_dir"])]


def warn_if_untrusted(path: str | Path) -> None:
    """Warn once per file when a checkpoint comes from outside the trusted directories.

    A .pt file is a pickle: loading it can execute code, and Ultralytics loads it with weights_only=False.
    """
    p = Path(path).resolve()
    if p in _WARNED or p.suffix != ".pt" or any(p.is_relative_to(d) for d in trusted_dirs()):
        return
    _WARNED.add(p)
    warn(
        f"{p} is outside this project's runs/ and weights/. PyTorch checkpoints are pickles and can run code when "
        "loaded: load only files you trust."
    )


def load_checkpoint(path: str | Path) -> dict:
    """The checkpoint dict of an Ultralytics `.pt`; RunError naming the file when it is not one.

    Truncated files, files that are not PyTorch archives, and archives without an Ultralytics model all fail here,
    before Ultralytics would raise a traceback from deep inside torch.
    """
    from ultralytics.utils.patches import torch_load

    p = Path(path)
    if not p.is_file():
        raise RunError(f"{p}: checkpoint not found")
    head = p.read_bytes()[:4]
    if head[:2] != b"PK" and head[:1] != b"\x80":  # a zip archive (torch.save) or a legacy pickle
        raise RunError(f"{p}: not a PyTorch checkpoint (the file does not start like one)")
    try:
        ckpt = torch_load(p, map_location="cpu", weights_only=False)
    except Exception as e:  # truncated zip, damaged pickle, missing classes: torch raises many types
        raise RunError(
            f"{p}: damaged checkpoint ({str(e).splitlines()[0][:90] if str(e) else type(e).__name__})"
        ) from None
    if not isinstance(ckpt, dict) or (ckpt.get("model") is None and ckpt.get("ema") is None):
        raise RunError(f"{p}: not an Ultralytics checkpoint (no model inside)")
    return ckpt


def check_classifier(path: str | Path, ckpt: dict, classes: int | None = None) -> None:
    """RunError unless `ckpt` holds a classification model (with `classes` outputs, when given)."""
    from ultralytics.nn.tasks import guess_model_task

    model = ckpt.get("ema") or ckpt.get("model")
    try:
        task = guess_model_task(model)
    except Exception:  # Ultralytics 8.4 raises a SyntaxError-like error when it cannot tell
        task = None
    if task not in (None, "classify"):
        raise RunError(f"{path}: a {task} model, not a classification model")
    names = getattr(model, "names", None)
    if classes is not None and names is not None and len(names) != classes:
        raise RunError(f"{path}: a model of {len(names)} classes; Fashion-MNIST has {classes}")
