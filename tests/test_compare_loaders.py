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


def _script(*args):
    r = subprocess.run([sys.executable, "benchmarks/compare_loaders.py", *map(str, args)], cwd=ROOT,
                       capture_output=True, text=True)  # fmt: skip
    return r.returncode, r.stdout, r.stderr


def _compare(tmp_path, fast, stock, *args):
    return _script(_run_dir(tmp_path / "fast", *fast), _run_dir(tmp_path / "stock", *stock), *args)


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


def test_several_runs_a_side_compare_their_mean_curves_with_a_standard_error(tmp_path):
    loss = [0.5] * 20
    fast = [_run_dir(tmp_path / f"f{i}", [v] * 20, loss) for i, v in enumerate((0.850, 0.852, 0.854))]
    stock = [_run_dir(tmp_path / f"s{i}", [v] * 20, [x + 0.004 for x in loss]) for i, v in enumerate((0.853, 0.855))]
    code, out, _ = _script("--fast", *fast, "--stock", *stock)
    assert code == 0, out
    assert "fast runs, mean val top-1 over epochs 11-20: 0.8500, 0.8520, 0.8540" in out
    assert "stock runs, mean val top-1 over epochs 11-20: 0.8530, 0.8550" in out
    # pooled sd of the runs' means: sqrt((8e-6 + 2e-6) / 3) = 0.001826; SE = sd * sqrt(1/3 + 1/2) = 0.001667
    assert "fast 0.8520, stock 0.8540 (-0.20 points, standard error 0.17; within 0.3: yes)" in out
    assert "mean difference -0.0040" in out
    code, out, _ = _script("--fast", *fast[:2], "--stock", stock[0])  # one stock run: the fast runs' spread serves
    assert "(-0.20 points, standard error 0.17; within 0.3: yes)" in out


def test_runs_with_different_epochs_compare_over_the_epochs_all_have(tmp_path):
    fast = [_run_dir(tmp_path / "f0", [0.85] * 20, [0.5] * 20), _run_dir(tmp_path / "f1", [0.85] * 12, [0.5] * 12)]
    code, _, err = _script("--fast", *fast, "--stock", _run_dir(tmp_path / "s", [0.85] * 20, [0.5] * 20))
    assert code == 2 and "common epochs: [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]" in err


def test_a_pair_or_two_lists_not_both(tmp_path):
    run = _run_dir(tmp_path / "r", [0.85] * 20, [0.5] * 20)
    for args in ([run], [run, run, "--fast", run], ["--fast", run]):
        code, _, err = _script(*args)
        assert code == 2 and "give FAST_RUN STOCK_RUN, or --fast RUN ... --stock RUN ..." in err
