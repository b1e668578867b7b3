"""benchmarks/compare_loaders.py: issue 28's two criteria over two runs' histories (synthetic results.csv files)."""

import subprocess
import sys

from tests.conftest import ROOT

HEADER = "epoch,time,train/loss,metrics/accuracy_top1,metrics/accuracy_top5,val/loss,lr/pg0"


def _run_dir(path, val, loss):
    path.mkdir(parents=True)
    rows = [f"{e},{10.0 * e},{x},{v},0.99,0.3,0.01" for e, (v, x) in enumerate(zip(val, loss), start=1)]
    (path / "results.csv").write_text("\n".join([HEADER, *rows]) + "\n")
    return path


def _compare(tmp_path, fast, stock, *args):
    f = _run_dir(tmp_path / "fast", *fast)
    s = _run_dir(tmp_path / "stock", *stock)
    r = subprocess.run([sys.executable, "benchmarks/compare_loaders.py", str(f), str(s), *args], cwd=ROOT,
                       capture_output=True, text=True)  # fmt: skip
    return r.returncode, r.stdout, r.stderr


def test_same_run_within_noise_holds(tmp_path):
    # epochs 1-4 may differ by a point (early noise), 5 on by less than 0.01 loss; window means 0.2 points apart
    val_f = [0.70, 0.75, 0.78, 0.80] + [0.85 + 0.002 * (i % 2) for i in range(16)]
    val_s = [0.69, 0.77, 0.77, 0.81] + [0.85 - 0.002 * (i % 2) for i in range(16)]
    loss_f = [0.9, 0.8, 0.7, 0.6] + [0.5 - 0.01 * i for i in range(16)]
    loss_s = [0.95, 0.7, 0.75, 0.65] + [0.5 - 0.01 * i + 0.009 for i in range(16)]
    code, out, _ = _compare(tmp_path, (val_f, loss_f), (val_s, loss_s))
    assert code == 0, out
    assert "fast 0.8510, stock 0.8490 (+0.20 points; within 0.3: yes)" in out
    assert "largest difference 0.0090 (within 0.01: yes); mean difference -0.0090" in out
    assert out.count("\n|") >= 20  # one row per common epoch


def test_a_gap_in_either_criterion_fails(tmp_path):
    val = [0.8] * 20
    loss = [0.5] * 20
    code, out, _ = _compare(tmp_path, (val, loss), ([0.796] * 20, loss))  # 0.4 points apart
    assert code == 1 and "(+0.40 points; within 0.3: NO)" in out
    code, out, _ = _compare(tmp_path / "b", (val, loss), (val, loss[:6] + [0.52] + loss[7:]))  # epoch 7: 0.02
    assert code == 1 and "largest difference 0.0200 (within 0.01: NO)" in out


def test_too_few_common_epochs_is_an_error(tmp_path):
    code, _, err = _compare(tmp_path, ([0.8] * 20, [0.5] * 20), ([0.8] * 15, [0.5] * 15))
    assert code == 2 and err.startswith("Error: epochs 11-20 are not all in both runs")
