"""The README under test: every `fmnist-yolo ...` and `make ...` line and every Python call it shows is parsed and
checked by the library's own argument checking (keys known, values in range), without training; every path it shows
is checked against a prepared tree; its layout table is the package's modules."""

from __future__ import annotations

import ast
import inspect
import re
import shlex
import subprocess
from pathlib import Path

import pandas as pd
import pytest

from tests.conftest import ROOT, require, run_cli, write_checkpoint

README = (ROOT / "README.md").read_text()
BLOCKS = re.findall(r"^```(\w*)\n(.*?)^```", README, flags=re.M | re.S)  # (language, text) of each code block


def _lines(prefix: str) -> list[str]:
    """Command lines of the README's shell blocks that start with `prefix`, comments and synopsis brackets kept."""
    out = []
    for lang, text in BLOCKS:
        if lang in ("bash", ""):
            out += [line.split("  #")[0].split(" # ")[0].strip() for line in text.splitlines()
                    if line.startswith(prefix)]  # fmt: skip
    return out


COMMANDS = _lines("fmnist-yolo ")
MAKES = _lines("make ")
SYNOPSES = [c for c in COMMANDS if "[" in c]  # `fmnist-yolo prepare [source=DIR] ...`: the keys, not values
EXAMPLES = [c for c in COMMANDS if c not in SYNOPSES]


def test_the_readme_shows_commands_of_every_kind():
    from fmnist_yolo.cli import COMMANDS as REGISTERED

    shown = {shlex.split(c)[1] for c in COMMANDS}
    assert shown >= set(REGISTERED) | {"--version"}, set(REGISTERED) - shown  # every command has an example
    assert len(MAKES) >= 8 and SYNOPSES


# --- the CLI's examples, each run in-process with the work functions replaced by their argument checks ----------


@pytest.fixture
def project(tmp_path, monkeypatch, real_tree):
    """A project directory where the README's example paths exist: the prepared tree (the real one) at
    datasets/fashion-mnist, a run at runs/classify/train, and the files the examples name (my.yaml, img/, ...)."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "datasets").mkdir()
    (tmp_path / "datasets" / "fashion-mnist").symlink_to(real_tree)
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "tree").symlink_to(real_tree)
    run = tmp_path / "runs" / "classify" / "train"
    write_checkpoint(run / "weights" / "best.pt")
    (run / "weights" / "best.onnx").write_bytes(b"")  # an exported model: val takes it by its suffix
    (tmp_path / "best.pt").write_bytes((run / "weights" / "best.pt").read_bytes())
    (tmp_path / "my.yaml").write_text("epochs: 3\nbatch: 32\n")
    (tmp_path / "my_space.yaml").write_text("lr0: [loguniform, 1e-4, 1e-1]\nfliplr: [uniform, 0.0, 0.5]\n")
    (run.parent / "tune").mkdir()
    (run.parent / "tune" / "best_hyperparameters.yaml").write_text("lr0: 0.002\nmomentum: 0.9\nrecipe: default\n")
    (tmp_path / "img").mkdir()
    first = next((real_tree / "test" / "8_bag").glob("*.png"))
    (tmp_path / "img" / first.name).write_bytes(first.read_bytes())
    return tmp_path


@pytest.fixture
def workplace(project, monkeypatch, real_tree):
    """The project, with the work functions replaced by stand-ins that check their arguments as the real ones do
    (the library's own checks), and record the calls."""
    import fmnist_yolo.analysis.compare as compare_mod
    import fmnist_yolo.analysis.report as report_mod
    import fmnist_yolo.data.check as check_mod
    import fmnist_yolo.data.prepare as prepare_mod
    import fmnist_yolo.deployment.export as deploy_mod
    import fmnist_yolo.evaluation.evaluate as evaluate_mod
    import fmnist_yolo.evaluation.predict as predict_mod
    import fmnist_yolo.reproduction as reproduction_mod
    import fmnist_yolo.training.train as train_mod
    import fmnist_yolo.training.tune as search_mod
    from fmnist_yolo.config import check_options
    from fmnist_yolo.evaluation.evaluate import Evaluation, _tta, check_ultralytics_keys, trained_model_file
    from fmnist_yolo.training.args import check_keys, resolve_args, valid_keys
    from fmnist_yolo.training.tune import TUNE_KEYS, loader_and_space

    calls = []
    real = {"prepare": prepare_mod.prepare, "compare": compare_mod.compare, "report": report_mod.report,
            "reproduce": reproduction_mod.reproduce}  # fmt: skip

    def evaluation(split="test"):
        table = pd.DataFrame({"file": ["a.png"], "true_id": [0], "pred_id": [0], "true": ["0_tshirt_top"],
                              "pred": ["0_tshirt_top"], "confidence": [0.9], "correct": [True]})  # fmt: skip
        return Evaluation(split, "best.pt", 1.0, 1.0, table, ["0_tshirt_top"])

    def train(callbacks=None, **kw):
        calls.append(("train", kw))
        resolved = resolve_args(kw)
        assert Path(resolved["data"] or "datasets/fashion-mnist").is_dir()
        if kw.get("resume") not in (None, True):
            assert Path(kw["resume"]).is_dir(), kw["resume"]
        return type("Run", (), {"result_line": lambda self: "checked"})()

    def evaluate(weights, split="test", data=None, tta=False, **overrides):
        calls.append(("val", {"model": weights, "split": split, "data": data, "tta": tta, **overrides}))
        assert split in ("train", "val", "test") and (data is None or Path(data).is_dir())
        _tta(tta)
        check_ultralytics_keys(overrides, "val")
        trained_model_file(weights)
        return evaluation(split)

    def predict(model, source, **overrides):
        calls.append(("predict", {"model": model, "source": source, **overrides}))
        check_ultralytics_keys(overrides, "predict")
        trained_model_file(model)
        files = predict_mod.images_in(source)  # the example's path, in the prepared tree
        return pd.DataFrame({"file": [str(f) for f in files], "class_id": 0, "class": "x", "confidence": 0.5})

    def prepare(**kw):
        calls.append(("prepare", kw))
        bound = inspect.signature(real["prepare"]).bind(**kw)
        bound.apply_defaults()
        args = dict(bound.arguments)
        check_options("prepare", {k: v for k, v in args.items() if k != "progress"})
        return real_tree

    def check(tree, workers=None):
        calls.append(("check", {"tree": tree, "workers": workers}))
        assert (Path(tree) / "manifest.json").is_file()
        return pd.DataFrame(columns=["path", "problem", "detail"])

    def tune(**kw):
        calls.append(("tune", kw))
        check_keys(kw, valid_keys() | TUNE_KEYS)
        resolved = resolve_args({k: v for k, v in kw.items() if k not in TUNE_KEYS})
        loader_and_space(kw.get("space"), resolved)  # the loader and its space, as tune decides them
        table = pd.DataFrame({"lr0": [0.01], "best_val_top1": [0.9], "run": ["r"], "error": [None]})
        table.attrs["dir"] = "runs/classify/tune"
        return table

    def compare(runs_dir, csv=None, skip_damaged=False, **kw):
        calls.append(("compare", {"runs_dir": runs_dir, "csv": csv, "skip_damaged": skip_damaged, **kw}))
        inspect.signature(real["compare"]).bind(runs_dir, csv=csv, skip_damaged=skip_damaged, **kw)
        return pd.DataFrame({"name": ["train"], "path": ["runs/classify/train"]})

    def report(run, **kw):
        calls.append(("report", {"run": run, **kw}))
        inspect.signature(real["report"]).bind(run, **kw)
        assert Path(run).is_dir() and (kw.get("data") is None or Path(kw["data"]).is_dir())
        check_options("report", kw)
        return Path(run) / "report.md"

    def export(model, format="onnx", data=None, check=True, **kw):
        from ultralytics.engine.exporter import export_formats

        calls.append(("export", {"model": model, "format": format, **kw}))
        assert format in export_formats()["Argument"], format
        trained_model_file(model)
        return {"file": "best.onnx"}

    def reproduce(run, **kw):
        calls.append(("reproduce", {"run": run, **kw}))
        inspect.signature(real["reproduce"]).bind(run, **kw)
        assert Path(run).is_dir(), run
        return type("Reproduction", (), {"verdict_line": lambda self: "checked", "verdict": "identical"})()

    for module, name, fn in [(train_mod, "train", train), (evaluate_mod, "evaluate", evaluate),
                             (predict_mod, "predict", predict), (prepare_mod, "prepare", prepare),
                             (check_mod, "check", check), (search_mod, "tune", tune),
                             (compare_mod, "compare", compare), (report_mod, "report", report),
                             (deploy_mod, "export", export), (reproduction_mod, "reproduce", reproduce)]:  # fmt: skip
        monkeypatch.setattr(module, name, fn)
    return calls


@pytest.mark.parametrize("line", EXAMPLES)
def test_each_command_example_parses_and_validates(line, workplace, capsys):
    words = shlex.split(line)[1:]
    words = [w for w in words if w != "..."]  # "and so on"
    code, out, err = run_cli(words, capsys)
    assert code == 0, f"{line}\n{err[-2000:]}"
    if words[0] not in ("--version", "recipes"):
        assert workplace, f"{line}: no work function was called"


@pytest.mark.parametrize("line", SYNOPSES)
def test_each_synopsis_names_keys_the_command_takes(line, workplace, capsys):
    """`fmnist-yolo prepare [source=DIR] ...`: every key shown is accepted by the command (a wrong one is an error)."""
    command, *words = shlex.split(line)[1:]
    keys = [w.strip("[]").split("=")[0] for w in words if "=" in w and w != "key=value"]
    assert keys
    for key in keys:
        code, _, err = run_cli([command, f"{key}=__probe__"], capsys)
        assert f"unknown {command} argument '{key}'" not in err and f"unknown argument '{key}'" not in err, line


@pytest.mark.parametrize("line", SYNOPSES)
def test_each_synopsis_is_the_commands_own(line):
    """A synopsis the README shows is the one `fmnist-yolo COMMAND --help` draws from the schema (config.OPTIONS)."""
    from fmnist_yolo.cli import usage

    assert line == " ".join(usage(shlex.split(line)[1]).split())


def test_each_default_the_readme_names_is_the_schemas():
    """ "`iterations` (trials, default 10)": a default the prose gives for an option is its declared one."""
    from fmnist_yolo.config import OPTIONS

    declared = {}
    for option in OPTIONS:
        declared.setdefault(option.key, set()).add(str(option.default))
    named = re.findall(r"`(\w+)` \((?:[^()`]*?, )?default ([\w.-]+)\)", README)
    checked = [(key, value) for key, value in named if key in declared]
    assert checked and all(value in declared[key] for key, value in checked), checked


@pytest.mark.parametrize("line", MAKES)
def test_each_make_example_expands_to_commands_that_validate(line, workplace, capsys):
    """`make -n` prints what the target would run; each fmnist-yolo command in it validates like the CLI's."""
    require("make", program=True)
    done = subprocess.run(["make", "-n", "-C", str(ROOT), *shlex.split(line)[1:]], capture_output=True, text=True)
    assert done.returncode == 0, f"{line}: {done.stderr}"
    commands = [
        shlex.split(c.split(" -m fmnist_yolo ", 1)[1]) for c in done.stdout.splitlines() if " -m fmnist_yolo " in c
    ]
    if shlex.split(line)[1] in ("train", "resume"):
        assert any(c[0] == "train" for c in commands), done.stdout
    for words in commands:
        code, _, err = run_cli(words, capsys)
        assert code == 0, f"{line} -> {words}\n{err[-2000:]}"


# --- the Python examples: every call of the public API binds to its signature, and its values validate ----------


def _python_blocks() -> list[str]:
    return [re.sub(r"^(>>> |\.\.\. )", "", text, flags=re.M) for lang, text in BLOCKS if lang == "python"]


def _calls() -> list[ast.Call]:
    """Every call in the Python blocks whose function is `fmnist_yolo.NAME`."""
    out = []
    for text in _python_blocks():
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
                base = node.func.value
                if isinstance(base, ast.Name) and base.id == "fmnist_yolo":
                    out.append(node)
    return out


CALLS = _calls()


def _value(node: ast.AST):
    """A literal's value; anything else (a variable, a lambda) stands in as a placeholder."""
    try:
        return ast.literal_eval(node)
    except ValueError:
        return "<expression>"


@pytest.mark.parametrize("call", CALLS, ids=[ast.unparse(c)[:60] for c in CALLS])
def test_each_python_call_binds_and_validates(call, project):
    import fmnist_yolo
    from fmnist_yolo.training.args import resolve_args
    from fmnist_yolo.training.tune import TUNE_KEYS

    name = call.func.attr
    assert name in fmnist_yolo.__all__, f"fmnist_yolo.{name} is not in the public API"
    fn = getattr(fmnist_yolo, name)
    args = [_value(a) for a in call.args]
    kwargs = {k.arg: _value(k.value) for k in call.keywords}
    inspect.signature(fn).bind(*args, **kwargs)  # TypeError for a keyword or argument the function does not take
    literal = {k: v for k, v in kwargs.items() if v != "<expression>"}
    if name == "train":
        resolve_args({k: v for k, v in literal.items() if k != "callbacks"})
    elif name == "tune":
        resolve_args({k: v for k, v in literal.items() if k not in TUNE_KEYS})
    for value in [*args, *kwargs.values()]:  # the paths it names exist in the prepared tree
        if isinstance(value, str) and value.startswith("datasets/"):
            assert Path(value).exists(), value


def test_python_examples_use_attributes_that_exist():
    """`ev.top1`, `run.test.per_class`, ...: the attributes the examples read exist on what the calls return."""
    from fmnist_yolo import Evaluation, Run

    fields = {"Evaluation": {f for f in Evaluation.__dataclass_fields__} | set(dir(Evaluation)),
              "Run": {f for f in Run.__dataclass_fields__} | set(dir(Run))}  # fmt: skip
    typed = {"ev": "Evaluation", "run": "Run", "run.test": "Evaluation"}
    seen = 0
    for text in _python_blocks():
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.Attribute):
                owner = ast.unparse(node.value)
                if owner in typed:
                    assert node.attr in fields[typed[owner]], f"{owner}.{node.attr}"
                    seen += 1
    assert seen >= 20


# --- paths: the tree's layout, the repository's files, and the layout table --------------------------------------


def test_the_tree_layout_shown_is_the_prepared_trees(real_tree):
    block = next(text for lang, text in BLOCKS if text.startswith("datasets/fashion-mnist/"))
    shown = re.findall(r"^\s+(train|val|test)/\s*(\S+\.png)", block, flags=re.M)
    assert len(shown) == 3
    for split, rel in shown:
        assert (real_tree / split / rel).is_file(), f"{split}/{rel} is not in the prepared tree"
    for name in re.findall(r"\b(manifest\.json|files\.sha256)\b", block):
        assert (real_tree / name).is_file()
    import json

    counts = json.loads((real_tree / "manifest.json").read_text())["counts"]
    totals = {split: sum(c.values()) for split, c in counts.items()}
    for split, n in re.findall(r"^\s+(train|val|test)/.*?([\d,]+) images", block, flags=re.M):
        assert totals[split] == int(n.replace(",", "")), split
    first, last = re.search(r"Class folders `(\w+)` … `(\w+)`", README).groups()
    assert sorted(p.name for p in (real_tree / "train").iterdir())[::9] == [first, last]


def test_every_repository_path_the_readme_names_exists():
    named = set(re.findall(r"`((?:fmnist_yolo|tests|benchmarks|\.ci)/[\w./-]*)`", README))
    named |= set(re.findall(r"\.venv/bin/python ((?:benchmarks|tests)/\S+\.py)", README))
    named |= {f"fmnist_yolo/{p}" for p in re.findall(r"`((?:data|training|analysis|evaluation)/[\w.]+\.py)`", README)}
    assert len(named) >= 20
    missing = sorted(p for p in named if not (ROOT / p).exists())
    assert not missing, missing


def _layout_rows() -> list[list[str]]:
    """The layout table's first column, row by row, as paths from the repository root: `fmnist_yolo/data/link.py`,
    `data/workers.py` (relative to the package), `plots.py` (relative to the row's first file)."""
    table = README.split("## Layout", 1)[1].split("\n\n`tests/`", 1)[0]
    rows = []
    for cell in re.findall(r"^\| (`.*?) \|", table, flags=re.M):
        row, folder = [], None
        for name in re.findall(r"`([\w./]+)`", cell):
            if name.startswith("fmnist_yolo/"):
                path = name
            elif "/" not in name and folder:
                path = f"{folder}/{name}"
            else:
                path = f"fmnist_yolo/{name}"
            folder = str(Path(path).parent)
            row.append(path.rstrip("/"))
        rows.append(row)
    return rows


def test_the_layout_table_lists_every_module_and_only_those():
    listed = {p for row in _layout_rows() for p in row}
    modules = {str(p.relative_to(ROOT)) for p in (ROOT / "fmnist_yolo").rglob("*.py")
               if p.name not in ("__init__.py", "__main__.py")}  # fmt: skip
    assert modules <= listed, sorted(modules - listed)  # every module is in the table
    missing = sorted(p for p in listed if not (ROOT / p).exists())
    assert not missing, missing  # and nothing in the table is gone


def _imports(path: Path) -> set[str]:
    """The package's modules that `path` imports (at the top or inside a function), as repository paths."""
    package = list(path.relative_to(ROOT).parent.parts)
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level:
            base = package[: len(package) - node.level + 1] + (node.module.split(".") if node.module else [])
            for name in [None] + [a.name for a in node.names]:
                parts = base + ([name] if name else [])
                for candidate in (Path(*parts).with_suffix(".py"), Path(*parts) / "__init__.py"):
                    if (ROOT / candidate).is_file() and candidate.name != "__init__.py":
                        out.add(str(candidate))
    return out


def test_the_layout_table_is_in_import_order():
    """ "Each stage imports only the ones above it": every import, lazy ones included, points up the table."""
    rank = {p: i for i, row in enumerate(_layout_rows()) for p in row}
    wrong = []
    for module, own in rank.items():
        if module.endswith(".py"):
            wrong += [f"{module} imports {m}" for m in _imports(ROOT / module) if rank.get(m, -1) > own]
    assert not wrong, wrong


def test_the_run_files_the_readme_names_are_the_run_directory_contract():
    from fmnist_yolo import rundir

    contract = {rundir.PROVENANCE, rundir.TEST_PREDICTIONS, rundir.RESULTS, rundir.ARGS, rundir.REPORT,
                f"weights/{rundir.SAFE_LAST}"}  # fmt: skip
    for name in contract:
        assert f"`{name}`" in README or f"`RUN_DIR/{name}`" in README or name in README, name
    assert "`best.pt`" in README and "weights/last.pt" in README
