"""Mutation testing: does the suite notice when the code changes? mutmut mutates one module at a time and runs, for
each mutant, only that module's fast unit tests (no training runs), each under a CPU-time limit; a mutant the tests
still pass on ("survived") is a behaviour no test pins down, or an equivalent mutant (listed in RESULTS.md).

    .venv/bin/python benchmarks/mutate.py [MODULE ...]     # make mutate [MUTATE="metrics rundir"]

MODULE is one of the names in MODULES (default: all). Each module gets its own mutmut work directory,
build/mutate/MODULE/, emptied first (mutmut keeps a mutant's result while its function is unchanged, even when
the tests changed); the summary is killed/all per module, then each survivor
(`mutmut show NAME` in that directory prints its diff).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
WORK = ROOT / "build" / "mutate"

# module name -> (file or files mutated, the pytest arguments that select its fast unit tests)
MODULES = {
    "metrics": ("fmnist_yolo/evaluation/metrics.py", ["tests/test_metrics.py"]),
    "rundir": ("fmnist_yolo/rundir.py", ["tests/test_rundir.py"]),
    "tree": ("fmnist_yolo/data/tree.py", ["tests/test_tree.py"]),
    "randaugment": ("fmnist_yolo/training/randaugment.py", ["tests/test_randaugment.py"]),
    # the fast path's units (not loop.py and step.py: training steps test them), with test_fast.py less its runs
    "fast": (
        [f"fmnist_yolo/training/fast/{m}.py" for m in ("augment", "plan", "norm", "loss", "data", "optim")],
        [
            "tests/test_fast.py",
            "-k",
            "not fast_run_is and not bf16_trains and not one_fast_step and not fast_takes_stock_steps"
            " and not never_reads and not progress_bar_counts and not slower_trains and not channels_last_on_cpu"
            " and not compiles_once and not device_step_trains",  # Dynamo traces mutmut's trampolines differently
        ],
    ),
}
TIMEOUT_MULTIPLIER = 2  # a mutant may take 2 x 2 x (its tests' clean time + TIMEOUT_CONSTANT) s of CPU
TIMEOUT_CONSTANT = 3.0  # seconds added to the clean time: a floor for very quick tests


def workdir(name: str) -> Path:
    """build/mutate/NAME: the package and tests linked in, and a pyproject.toml whose [tool.mutmut] is this module's."""
    path, tests = MODULES[name]
    d = WORK / name
    d.mkdir(parents=True, exist_ok=True)
    for link in ("fmnist_yolo", "tests"):
        if not (d / link).is_symlink():
            (d / link).symlink_to(ROOT / link, target_is_directory=True)
    settings = "\n".join([
        "[tool.mutmut]",
        'source_paths = ["fmnist_yolo"]',
        f"only_mutate = {json.dumps([path] if isinstance(path, str) else path)}",
        f"pytest_add_cli_args_test_selection = {json.dumps(tests)}",
        'pytest_add_cli_args = ["-p", "no:cacheprovider"]',
        f"timeout_multiplier = {TIMEOUT_MULTIPLIER}",
        f"timeout_constant = {TIMEOUT_CONSTANT}",
        "use_git_change_detection = false",
    ])  # fmt: skip
    (d / "pyproject.toml").write_text((ROOT / "pyproject.toml").read_text() + "\n" + settings + "\n")
    return d


def results(d: Path) -> dict[str, str]:
    """Mutant name -> status, from mutmut's records in D/mutants/."""
    from mutmut.stats import status_by_exit_code  # exit code of a mutant's test run -> killed, survived, ...

    out = {}
    for meta in sorted((d / "mutants").rglob("*.py.meta")):
        for key, code in json.loads(meta.read_text())["exit_code_by_key"].items():
            out[key] = status_by_exit_code[code]
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("modules", nargs="*", metavar="MODULE", help=f"of {', '.join(MODULES)} (default: all)")
    names = parser.parse_args(argv).modules or list(MODULES)
    if unknown := [n for n in names if n not in MODULES]:
        parser.error(f"unknown module {', '.join(unknown)}; the modules are {', '.join(MODULES)}")
    summary = {}
    for name in names:
        d = workdir(name)
        shutil.rmtree(d / "mutants", ignore_errors=True)
        print(f"== {name}: {MODULES[name][0]} with {' '.join(MODULES[name][1])}", flush=True)
        # one thread a worker: mutmut runs one mutant per core, and its limit is CPU time, which idle OpenMP threads
        # spinning would use up (torch's tests then "time out" on the clean code)
        env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
        with open(d / "mutmut.log", "w") as log:  # mutmut's progress spinner: kept out of the terminal
            code = subprocess.call([sys.executable, "-m", "mutmut", "run"], cwd=d, env=env, stdout=log, stderr=log)
        if code:
            print((d / "mutmut.log").read_text()[-3000:], file=sys.stderr)
            print(f"{name}: mutmut exited with {code} (log: {d / 'mutmut.log'})", file=sys.stderr)
            return code
        summary[name] = results(d)
    for name, statuses in summary.items():
        killed = sum(s in ("killed", "timeout") for s in statuses.values())
        timeouts = sum(s == "timeout" for s in statuses.values())
        survivors = sorted(k for k, s in statuses.items() if s not in ("killed", "timeout"))
        print(f"{name}: {killed}/{len(statuses)} killed ({killed / max(len(statuses), 1):.1%}; {timeouts} of them "
              f"by the time limit); {len(survivors)} not killed")  # fmt: skip
        for key in survivors:
            print(f"    {statuses[key]:10s} {key}")
        if survivors:
            print(f"    (the diff of one: cd {WORK / name} && {sys.executable} -m mutmut show NAME)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
