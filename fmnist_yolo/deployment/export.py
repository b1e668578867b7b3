"""Export a trained model with Ultralytics, then prove it: the exported model is evaluated on the test split and
compared with best.pt, image by image. The figures go beside the exported file and into the run's provenance.

Exported classifiers disagree with their .pt when the preprocessing differs (resize then crop against crop then
resize, RGB/BGR, /255) or the class order does; comparing the predictions on the test split catches either.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from ..config import DEFAULTS, check_options
from ..errors import ConfigError, RunError
from ..files import write_text

MIN_AGREEMENT = 0.999  # share of test images whose top-1 label must be the .pt's
MAX_TOP1_DIFFERENCE = 0.0005  # top-1 accuracy may differ by at most 0.05 points
NEEDS = {"onnx": ("onnx", "onnxruntime", "onnxslim")}  # modules a format needs (the `export` extra), by format


def export(model: str | Path, format: str = DEFAULTS.format, data: str | Path | None = None,
           check: bool = DEFAULTS.check, **overrides) -> dict:  # fmt: skip
    """Export `model` (a run directory or a .pt) to `format` with Ultralytics, and check it against the .pt.

    Args:
        model: a run directory (its best.pt) or a .pt file.
        format: an Ultralytics export format ("onnx", "torchscript", ...).
        data: the tree whose test split the check uses (default: the prepared tree).
        check: evaluate the exported model on test and compare it with the .pt (formats Ultralytics can run).
        **overrides: other Ultralytics export arguments (imgsz, half, dynamic, simplify, opset, ...).

    Returns:
        The record written beside the exported file (`<file>.agreement.json`) and into the run's provenance:
        file, format, seconds, and with check: images, identical top-1 share, top-1 of both and their
        difference, the largest difference of a class probability.

    Raises:
        RunError: the exported model agrees with the .pt on fewer than 99.9 % of the test images, or its top-1
            differs by more than 0.05 points.
    """
    from ultralytics import YOLO

    from ..evaluation.evaluate import check_ultralytics_keys, evaluate, trained_model_file
    from ..rundir import Recorder

    check_options("export", {"format": format, "data": data, "check": check})
    check_ultralytics_keys(overrides, "export")
    missing = [m for m in NEEDS.get(str(format), ()) if not _importable(m)]
    if missing:  # else Ultralytics would try to pip-install them, which fails offline
        raise ConfigError(f"format={format} needs {', '.join(missing)}: pip install 'fmnist-yolo[export]'")
    weights = trained_model_file(model)
    t0 = time.time()
    try:
        exported = Path(YOLO(str(weights)).export(format=format, **overrides))
    except (ValueError, TypeError, SyntaxError, FileNotFoundError) as e:
        raise ConfigError(f"{weights}: export to {format} failed: {str(e).splitlines()[0]}") from None
    result = {"file": str(exported), "format": str(format), "from": str(weights), "seconds": round(time.time() - t0, 1),
              "at": time.strftime("%Y-%m-%dT%H:%M:%S%z")}  # fmt: skip
    if check:
        reference = evaluate(weights, "test", data)
        candidate = evaluate(exported, "test", data)
        result.update(agreement(reference, candidate))
    write_text(Path(f"{exported}.agreement.json"), json.dumps(result, indent=1) + "\n")
    run_dir = weights.parent.parent if weights.parent.name == "weights" else None
    recorder = Recorder.open(run_dir) if run_dir is not None else None
    if recorder is not None:
        recorder.add(export={**recorder.record.export, str(format): result})
    if check and (result["identical_top1"] < MIN_AGREEMENT or abs(result["top1_difference"]) > MAX_TOP1_DIFFERENCE):
        raise RunError(f"{exported}: the exported model agrees with {weights.name} on {result['identical_top1']:.2%} "
                       f"of the test images and its top-1 differs by {100 * result['top1_difference']:+.2f} points "
                       f"(needs >= {MIN_AGREEMENT:.1%} and <= {100 * MAX_TOP1_DIFFERENCE:.2f})")  # fmt: skip
    return result


def agreement(reference, candidate) -> dict:
    """How two evaluations of the same images agree: identical top-1 share, top-1 of each, largest probability gap."""
    a, b = reference.predictions, candidate.predictions
    if list(a["file"]) != list(b["file"]):
        raise RunError("the two evaluations are not of the same images in the same order")
    cols = [f"p_{n}" for n in reference.names]
    if [f"p_{n}" for n in candidate.names] != cols:
        raise RunError(f"class order differs: {reference.names} against {candidate.names}")
    return {
        "images": len(a),
        "identical_top1": float((a["pred_id"].to_numpy() == b["pred_id"].to_numpy()).mean()),
        "top1_pt": reference.top1,
        "top1_exported": candidate.top1,
        "top1_difference": candidate.top1 - reference.top1,
        "max_probability_difference": float(abs(a[cols].to_numpy() - b[cols].to_numpy()).max()),
    }


def _importable(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None
