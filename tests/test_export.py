"""Export to ONNX, proven on the test split against the .pt with a real onnxruntime session."""

import json

import pytest

from fmnist_yolo.errors import RunError
from tests.conftest import require, run_cli


@pytest.fixture(scope="module")
def exported(tiny):
    require("onnxruntime")
    require("onnx")
    from fmnist_yolo.deployment.export import export

    tree, run = tiny
    return tree, run, export(run.dir, "onnx", tree)


def test_onnx_agrees_with_the_pt_and_is_recorded(exported):
    tree, run, result = exported
    assert result["file"].endswith(".onnx") and result["images"] == 30
    assert result["identical_top1"] >= 0.999 and abs(result["top1_difference"]) <= 0.0005
    assert result["max_probability_difference"] < 1e-3
    beside = json.loads(open(result["file"] + ".agreement.json").read())
    assert beside == result
    provenance = json.loads((run.dir / "fmnist_yolo.json").read_text())
    assert provenance["export"]["onnx"]["identical_top1"] == result["identical_top1"]


def test_val_and_predict_take_the_exported_file(exported, capsys):
    import onnxruntime

    tree, run, result = exported
    session = onnxruntime.InferenceSession(result["file"], providers=["CPUExecutionProvider"])
    assert session.get_inputs()[0].shape[1:] == [3, 32, 32]  # a real ONNX graph for a 32-pixel grey-as-RGB input
    code, out, err = run_cli(["val", f"model={result['file']}", f"data={tree}"], capsys)
    assert code == 0 and f"top-1 {run.test.top1:.4f}" in out, err[-2000:]
    code, out, err = run_cli(["predict", f"model={result['file']}", f"source={tree / 'test' / '8_bag'}"], capsys)
    assert code == 0 and out.count(".png") == 3, err[-2000:]


def test_disagreement_fails_with_one_line(exported, monkeypatch):
    """A preprocessing mismatch shows as different labels: the check refuses the export."""
    import fmnist_yolo.evaluation.evaluate as ev
    from fmnist_yolo.deployment.export import export

    tree, run, _ = exported
    real = ev.evaluate

    def shifted(weights, split="test", data=None, **kw):  # the exported model "predicts" the next class
        result = real(weights, split, data, **kw)
        if str(weights).endswith(".onnx"):
            result.predictions["pred_id"] = (result.predictions["pred_id"] + 1) % 10
        return result

    monkeypatch.setattr(ev, "evaluate", shifted)
    with pytest.raises(RunError, match=r"agrees with best.pt on 0.00% of the test images"):
        export(run.dir, "onnx", tree)


def test_export_without_its_extra_says_how_to_install(tiny, monkeypatch, capsys):
    import fmnist_yolo.deployment.export as ex

    monkeypatch.setattr(ex, "_importable", lambda module: module != "onnxruntime")
    code, _, err = run_cli(["export", f"model={tiny[1].dir}"], capsys)
    assert code == 1 and "format=onnx needs onnxruntime: pip install 'fmnist-yolo[export]'" in err
