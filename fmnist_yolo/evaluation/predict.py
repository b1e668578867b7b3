"""Classify images with a trained model: one row per image, its class and confidence."""

from __future__ import annotations

import glob
from pathlib import Path

import pandas as pd

from ..compat import not_the_yolo_cli
from ..errors import ConfigError
from .evaluate import check_ultralytics_keys, trained_model_file


def images_in(source: str | Path) -> list[Path]:
    """The image files `source` names (an image, or a directory searched recursively, hidden entries left out, as
    a recursive glob lists them); ConfigError when none."""
    from ultralytics.data.utils import IMG_FORMATS

    src = Path(source)
    if not src.exists():
        raise ConfigError(f"{source}: source not found")
    files = [Path(f) for f in sorted(glob.glob(_pattern(src), recursive=True))] if src.is_dir() else [src]
    images = [f for f in files if f.is_file() and f.suffix.lower().lstrip(".") in IMG_FORMATS]
    if not images:
        kind = "directory holds no images" if src.is_dir() else "is not an image file"
        raise ConfigError(f"{source}: source {kind} (formats: {', '.join(sorted(IMG_FORMATS))})")
    return images


def _pattern(directory: Path) -> str:
    """Every file below `directory`, as a glob: Ultralytics' own directory listing is not recursive."""
    return str(Path(glob.escape(str(directory.absolute()))) / "**" / "*.*")


def predict(model: str | Path, source: str | Path, **overrides) -> pd.DataFrame:
    """Classify an image or a directory of images; one row per image: file, class_id, class, confidence.

    Other Ultralytics predict arguments (imgsz, device, batch, half, ...) pass through. An image that cannot be
    decoded is one line naming the file.
    """
    from ultralytics import YOLO

    check_ultralytics_keys(overrides, "predict")
    weights = trained_model_file(model)
    src = Path(source)
    images = images_in(src)
    target = _pattern(src) if src.is_dir() else str(src.absolute())
    rows = []
    with not_the_yolo_cli():
        try:
            results = YOLO(str(weights), task="classify").predict(source=target, verbose=False, **overrides)
        except (FileNotFoundError, OSError, ValueError, TypeError, SyntaxError) as e:  # Ultralytics' own errors
            raise ConfigError(f"{source}: cannot predict: {str(e).splitlines()[0]}") from None
    for r in results:
        rows.append({"file": r.path, "class_id": int(r.probs.top1), "class": r.names[int(r.probs.top1)],
                     "confidence": float(r.probs.top1conf)})  # fmt: skip
    predicted = {r["file"] for r in rows}
    skipped = [f for f in images if str(f.absolute()) not in predicted]  # Ultralytics skips them without a word
    if skipped:
        raise ConfigError(f"{skipped[0]}: cannot decode image ({len(skipped)} of {len(images)} images)")
    return pd.DataFrame(rows, columns=["file", "class_id", "class", "confidence"])
