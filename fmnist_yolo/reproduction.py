"""Reproduce a run from its record alone, and say whether it did: `fmnist-yolo reproduce RUN`.

reproduce(run) reads RUN/fmnist_yolo.json and trains again, into a new run directory beside RUN:

* on the recorded tree, checked by content (its file list's hash and split options, `data.tree.identity`); a tree
  that differs is rebuilt from the recorded options when the recorded source files are at hand, else nothing trains;
* from the recorded weights (by SHA-256), with the recorded arguments, seed and deterministic flag;
* with every version that differs from the record (fmnist-yolo, Ultralytics, torch, pandas, Python, the commit)
  named in one warning, or refused with strict=True;
* on the recorded schedule: `epochs=N` trains with the recorded `epochs`, from which Ultralytics derives the lr
  lambda, the warm-up, the accumulation cap and optimizer=auto's choice, and stops after epoch N (trainer.stop, as
  an early stop: no extra pass);
* with a recorded interruption replayed: stopped before the epoch the record says the run was resumed after, then
  resumed (the stock loader's shuffle restarts at a resume, so a run trained straight through is another run).

Then it compares the two runs and writes NEW/reproduction.json (its one writer): per epoch the difference in each
results.csv column, the best epochs, val and test top-1, best.pt's test labels and probabilities, and the verdict.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .config import DEFAULTS, check_options
from .data.tree import prepare_args
from .errors import ConfigError, DataError, RunError, warn
from .files import write_text
from .rundir import PROVENANCE, Provenance, Recorder, best_epoch, load_history, paths, read_provenance

log = logging.getLogger(__name__)

VERDICTS = ("identical", "equal within rounding", "different")
# "equal within rounding": float32 sums taken in another order (other thread counts, GPU kernels) move a loss or a
# learning rate in its 5th significant digit and leave every accuracy (a count of images) as it was
RTOL, ATOL = 1e-4, 1e-6
PROBABILITY_ROUNDING = 1e-4  # the largest difference of a test class probability still called rounding
LABELS_ROUNDING = 0.999  # the share of identical test labels still called rounding (a near-tie may flip)
NOT_COMPARED = ("epoch", "time")  # results.csv columns that are no result: the epoch itself and wall-clock seconds
REPRODUCTION_SCHEMA = 1  # reproduction.json's layout


class _Interrupted(Exception):
    """Raised at the start of the epoch where the recorded run was interrupted: ends that phase as a kill would."""


@dataclass
class Reproduction:
    """A reproduction: the new run (a training.train.Run), the run it reproduces, and reproduction.json as a dict."""

    run: Any
    of: Path
    report: dict

    @property
    def dir(self) -> Path:
        """The new run's directory."""
        return self.run.dir

    @property
    def verdict(self) -> str:
        """identical, equal within rounding, or different."""
        return self.report["verdict"]

    def verdict_line(self) -> str:
        """One line: which run reproduces which, the verdict, and the figures it rests on (original/reproduction)."""
        return verdict_line(self.report)


def verdict_line(report: dict) -> str:
    """reproduction.json in one line: which run reproduces which, over which epochs, the verdict and its figures."""
    r = report
    span = "" if r["epochs"] == r["epochs_recorded"] else f" (epochs 1-{r['epochs']} of {r['epochs_recorded']})"
    parts = f", parting at epoch {r['parts_at_epoch']}" if r.get("parts_at_epoch") else ""
    b, v = r["best_epoch"], r["val_top1"]
    figures = [
        f"best epoch {b['original']}/{b['reproduction']}",
        f"val top-1 {_f(v['original'])}/{_f(v['reproduction'])}",
    ]
    if r.get("test_top1"):
        t = r["test_top1"]
        figures.append(f"test top-1 {_f(t['original'])}/{_f(t['reproduction'])}")
    if r.get("test_predictions"):
        p = r["test_predictions"]
        figures.append(f"identical test labels {p['identical_labels']:.2%}, "
                       f"largest probability difference {p['max_probability_difference']:.3g}")  # fmt: skip
    return f"{r['run']} reproduces {r['reproduces']}{span}: {r['verdict']}{parts} ({'; '.join(figures)})"


def _f(x) -> str:
    return "-" if x is None else f"{x:.4f}"


def reproduce(
    run: str | Path,
    name: str | None = None,
    device: Any = None,
    epochs: int | None = None,
    strict: bool = DEFAULTS.strict,
    data: str | Path | None = None,
) -> Reproduction:
    """Train a run again from its fmnist_yolo.json alone, into a new run directory beside it, and compare the two.

    Args:
        run: the run directory to reproduce (trained by fmnist-yolo: it reads the run's fmnist_yolo.json).
        name: the new run's name (default RUN-reproduce; Ultralytics numbers it when taken).
        device: train there instead of on the recorded device (e.g. "cpu", 0).
        epochs: reproduce only the first N epochs, on the recorded schedule (default: all the run completed).
        strict: refuse when a version (or the commit) differs from the record, instead of warning.
        data: the tree at another path (checked by content like the recorded one).

    Returns:
        A Reproduction: the new Run, the run it reproduces, and the verdict with its figures (NEW/reproduction.json):
        "identical" (every figure bit-equal), "equal within rounding" or "different", and the first epoch where
        they part.
    """
    from .training.train import train

    check_options("reproduce", {"name": name, "device": device, "epochs": epochs, "strict": strict, "data": data})
    original = Path(run).absolute()
    record = _read_record(original)
    completed = int(load_history(original)["epoch"].max())
    planned = int(record.args.get("epochs") or record.epochs_planned or completed)
    target = _epochs(epochs, completed, original)
    if record.world_size > 1 and (target < planned or record.resumed):
        raise RunError(f"{original}: a multi-GPU (DDP) run is reproduced only whole and uninterrupted (the callbacks "
                       "that stop and interrupt it do not reach the DDP workers)")  # fmt: skip
    differences = version_differences(record)
    if differences:
        message = f"{original} was recorded with other versions: {'; '.join(differences)}"
        if strict:
            raise RunError(f"{message} (strict=True refuses to reproduce it)")
        warn(f"{message}. The reproduction may differ for that alone (strict=True refuses).")
    tree, rebuilt = recorded_tree(record, data)
    _check_weights(record)
    args = train_arguments(record, tree, original, name, device)
    t0 = time.time()
    new = _train(train, args, record, target)
    seconds = time.time() - t0
    report = {**compare_runs(original, new.dir, target), "wall_time_s": round(seconds, 2),
              "tree": {"path": str(tree), "rebuilt": rebuilt}, "version_differences": differences}  # fmt: skip
    write_text(paths(new.dir).reproduction, json.dumps(report, indent=1) + "\n")
    recorder = Recorder(new.record, new.dir)
    recipe = dict(record.recipe)  # trained from its resolved arguments: the recipe as recorded
    if target < planned:
        recorder.stop(f"fmnist-yolo reproduce epochs={target}: epochs 1-{target} of {planned}", recipe=recipe)
    else:
        recorder.add(recipe=recipe)
    result = Reproduction(new, original, report)
    log.info(result.verdict_line(), extra={"result": True})
    return result


def _read_record(original: Path) -> Provenance:
    """The record to reproduce from; RunError for a run that has none or nothing to reproduce."""
    if not original.is_dir():
        raise RunError(f"{original}: run directory not found")
    record = read_provenance(original)
    if record is None:
        raise RunError(f"{original}: no {PROVENANCE} (not trained by fmnist-yolo): nothing to reproduce it from")
    if record.status == "failed":
        raise RunError(f"{original}: training failed before its first epoch ended: nothing to reproduce")
    if record.args.get("time"):
        raise RunError(f"{original}: trained with time={record.args['time']}: its epochs and lr schedule followed the "
                       "wall clock, which does not repeat")  # fmt: skip
    return record


def _epochs(epochs: Any, completed: int, original: Path) -> int:
    """The epochs to reproduce: all the run completed, or the first `epochs`."""
    if epochs is None:
        return completed
    if epochs > completed:
        raise ConfigError(f"epochs={epochs}: {original} completed {completed} epochs; at most those are reproduced")
    return epochs


def _code(state: dict) -> tuple:
    """The code a git state pins: (commit, hash of uncommitted changes)."""
    return state.get("commit"), state.get("diff_sha256") if state.get("dirty") else None


def _describe_code(state: dict) -> str:
    commit, changes = _code(state)
    if commit is None:
        return "none (not a git checkout)"
    return commit[:12] + (f" with uncommitted changes {changes[:8]}" if changes else "")


def version_differences(record: Provenance) -> list[str]:
    """Each version that differs from the record, as 'what now (recorded what)'; the commit too when recorded."""
    from .training.environment import git_state
    from .training.train import versions

    now = versions()
    out = [
        f"{key} {now.get(key)} (recorded {value})" for key, value in record.versions.items() if now.get(key) != value
    ]
    if "commit" not in record.environment:
        out.append(f"commit unknown (a schema {record.schema} record, from before commits were recorded)")
    else:
        here = git_state()
        if _code(here) != _code(record.environment):
            out.append(f"commit {_describe_code(here)} (recorded {_describe_code(record.environment)})")
    return out


def _options(prepared: dict) -> str:
    args = prepare_args(prepared)
    return f"val_size={args.get('val_size')} split_seed={args.get('split_seed')}"


def tree_difference(record: Provenance, tree: Path) -> str | None:
    """How `tree` differs from the recorded tree by content (a phrase), or None when it is the recorded one.

    A record from before schema 3 holds only the manifest's own checksum; a tree without a manifest (the user's
    own) cannot be checked and is taken as it is.
    """
    from .data.tree import identity, manifest_checksum, read_listing, read_manifest

    want = record.data.get("prepared")
    if not tree.is_dir():
        return "not found"
    found = identity(tree)
    if want:
        if not found:
            return "has no manifest.json (not a prepared tree)"
        diffs = []
        if found.get("options") != want.get("options"):
            diffs.append(f"split options {_options(found)} (recorded {_options(want)})")
        if found.get("format") != want.get("format"):
            diffs.append(f"layout format {found.get('format')} (recorded {want.get('format')})")
        if found.get("files_sha256") != want.get("files_sha256"):
            diffs.append(f"other images: files.sha256 hashes to {str(found.get('files_sha256'))[:12]}... "
                         f"(recorded {str(want.get('files_sha256'))[:12]}...)")  # fmt: skip
        else:
            try:
                read_listing(tree, read_manifest(tree))
            except DataError:
                diffs.append("files.sha256 does not match its manifest (edited or damaged)")
        return "; ".join(diffs) or None
    recorded = record.data.get("manifest_sha256")
    if recorded and manifest_checksum(tree) != recorded:
        return "its manifest differs from the recorded one (the record predates content checks: it cannot tell more)"
    return None


def recorded_tree(record: Provenance, data: str | Path | None = None) -> tuple[Path, bool]:
    """(the tree to train on, whether it was rebuilt): `data`, else the recorded tree (the default tree when the
    recorded path is not on this machine), checked by content. One that differs is rebuilt with the recorded
    options when the recorded source files are at hand; else DataError says what differs, and nothing trains."""
    from .data.prepare import prepare

    recorded = record.data.get("tree") or record.args.get("data")
    tree = Path(data) if data else Path(recorded) if recorded else DEFAULTS.out
    if not data and not tree.exists():
        tree = DEFAULTS.out
    tree = tree.absolute()
    problem = tree_difference(record, tree)
    if problem is None:
        return tree, False
    prepared = record.data.get("prepared") or {}
    source = source_at_hand(prepared)
    if source is None:
        why = "the recorded source files are not at hand" if prepared else "the record holds no options to rebuild it"
        raise DataError(f"{tree}: not the tree the run was trained on: {problem}; {why}, so nothing was trained")
    log.info(f"{tree}: {problem}; rebuilding it from {source} with the recorded options ({_options(prepared)})")
    args = {"val_size": DEFAULTS.val_size, "split_seed": DEFAULTS.split_seed, **prepare_args(prepared)}
    prepare(source=source, out=tree, val_size=int(args["val_size"]), split_seed=int(args["split_seed"]),
            verify=bool(args.get("verify")), force=True, progress=False)  # fmt: skip
    problem = tree_difference(record, tree)
    if problem is not None:
        raise DataError(f"{tree}: rebuilt from {source} with the recorded options, and still {problem}")
    return tree, True


def source_at_hand(prepared: dict) -> Path | None:
    """A directory holding the recorded source files (by payload SHA-256): where they were, or where `prepare`
    looks ($FMNIST_SOURCE, the project's raw dir, Debian's package; no download); None when there is none."""
    from .data.sources import Source, load, locate_files, resolve_source

    want = {key: s.get("payload_sha256") for key, s in (prepared.get("sources") or {}).items()}
    if not want or None in want.values():
        return None
    candidates = [Path(s["path"]).parent for s in prepared["sources"].values() if s.get("path")]
    try:
        candidates.append(resolve_source(None, download=False).dir)
    except DataError:
        pass
    seen = set()
    for directory in candidates:
        if directory.resolve() in seen:
            continue
        seen.add(directory.resolve())
        try:
            arrays = load(Source(directory, "recorded", locate_files(directory)), verify_checksums=False)
        except DataError:
            continue
        if {key: f["payload_sha256"] for key, f in arrays.fingerprints.items()} == want:
            return directory
    return None


def _check_weights(record: Provenance) -> None:
    """RunError unless the pretrained weights the run started from are the recorded file, by SHA-256."""
    from .training.environment import file_sha256

    recorded = record.model.get("sha256")
    if not record.model.get("pretrained") or not recorded:
        return
    used = record.model.get("used")
    found = file_sha256(used)
    if found != recorded:
        what = "not found" if found is None else f"not the recorded weights (SHA-256 {found[:12]}...)"
        raise RunError(f"{used}: {what}; the run started from weights with SHA-256 {recorded[:12]}..., so nothing "
                       "was trained")  # fmt: skip


def _device(record: Provenance) -> Any:
    """The recorded device as Ultralytics' device= takes it: cpu, 0 (cuda:0), mps; a DDP run's device list."""
    from .training.args import devices

    if record.world_size > 1 or not record.device:
        return record.args.get("device")
    return next(iter(devices(record.device)), None)  # torch's name for it, read as train's device= is read


def train_arguments(record: Provenance, tree: Path, original: Path, name: str | None, device: Any) -> dict:
    """train()'s arguments for the reproduction: the recorded resolved arguments (the recipe's values included), the
    recorded seed and deterministic flag, the checked tree, a new run directory beside the original."""
    args = {k: v for k, v in record.args.items() if k not in ("project", "name", "exist_ok", "data", "resume")}
    args.update({k: record.environment[k] for k in ("seed", "deterministic") if k in record.environment})
    args["fast"] = bool(args.get("fast"))  # the recorded loader: a record without the key trained with stock's
    return {**args, "data": str(tree), "project": str(original.parent), "name": name or f"{original.name}-reproduce",
            "exist_ok": False, "device": _device(record) if device is None else device}  # fmt: skip


def _train(train, args: dict, record: Provenance, target: int):
    """Train the reproduction to epoch `target` on the recorded schedule, replaying the recorded interruptions: each
    phase until the next epoch the record was resumed after, then a resume of the new run."""
    resumes = {int(e.get("completed_epochs") or 0): dict(e.get("overrides") or {}) for e in record.resumed}
    stops = sorted(k for k in resumes if 0 < k < target)
    new_dir: list[Path] = []

    def callbacks(interrupt_before: int | None) -> dict:
        def on_train_start(trainer) -> None:
            new_dir[:] = [Path(trainer.save_dir)]

        def on_train_epoch_start(trainer) -> None:  # epochs 1..k saved, nothing of epoch k+1 begun
            if trainer.epoch == interrupt_before:
                raise _Interrupted

        def on_fit_epoch_end(trainer) -> None:  # an early stop: final validation of best.pt, as any stopped run
            if trainer.epoch + 1 >= target:
                trainer.stop = True

        return {"on_train_start": on_train_start, "on_train_epoch_start": on_train_epoch_start,
                "on_fit_epoch_end": on_fit_epoch_end}  # fmt: skip

    for i, stop in enumerate([*stops, None]):
        try:
            if i == 0:
                return train(callbacks=callbacks(stop), **args)
            overrides = {k: v for k, v in resumes[stops[i - 1]].items() if k not in ("data", "device")}
            return train(resume=str(new_dir[0]), callbacks=callbacks(stop), data=args["data"], device=args["device"],
                         **overrides)  # fmt: skip
        except _Interrupted:
            log.info(f"Interrupted after epoch {stop}, where the recorded run was; resuming it as the record says")
    raise AssertionError("unreachable: the last phase has no interruption")


def _predictions(original, reproduction) -> dict | None:
    """best.pt's test predictions of both runs, image by image: the share of identical labels and the largest
    class-probability difference (None when the two were not made on the same images and classes)."""
    import numpy as np

    tables = []
    for ev in (original, reproduction):
        p = ev.predictions
        key = p["file"].map(lambda f: "/".join(Path(str(f)).parts[-2:]))  # class/file: trees may sit elsewhere
        tables.append(p.assign(_key=key).sort_values("_key", kind="stable").reset_index(drop=True))
    a, b = tables
    if list(a["_key"]) != list(b["_key"]) or original.names != reproduction.names:
        return None
    columns = [f"p_{n}" for n in original.names]
    same = float((a["pred_id"].to_numpy() == b["pred_id"].to_numpy()).mean())
    largest = float(np.abs(a[columns].to_numpy() - b[columns].to_numpy()).max())
    return {"images": len(a), "identical_labels": same, "max_probability_difference": largest}


def _test_evaluation(run_dir: Path, record: Provenance):
    """best.pt's test evaluation: the one train stored when current (best.pt is not loaded then), else evaluated once
    and stored; None for a run without one."""
    from .evaluation.evaluate import best_on_test, stored_test

    if record.test is None or not paths(run_dir).best.is_file():
        return None
    try:
        stored = stored_test(run_dir)
    except RunError:  # damaged: best_on_test rebuilds it and says so
        stored = None
    return stored if stored is not None else best_on_test(run_dir)


def _close(a, b) -> bool:
    import numpy as np

    return a is None and b is None or (a is not None and b is not None and bool(np.isclose(a, b, rtol=RTOL, atol=ATOL)))


def _float_or_none(x):
    return None if x is None else float(x)


def compare_runs(original: str | Path, reproduction: str | Path, epochs: int | None = None) -> dict:
    """The verdict on `reproduction` as a reproduction of the first `epochs` epochs of `original` (default: all of
    them), from the two run directories: reproduction.json's contents.

    Per epoch, the difference in each results.csv column (but time); the best epoch of each; val top-1 of each
    (best.pt's, or at the best epoch in results.csv when the original's best.pt comes from a later epoch); test top-1
    and best.pt's test labels and probabilities when both runs have them for the same epoch. The verdict:
    "identical" (every figure bit-equal), "equal within rounding" (within RTOL/ATOL, probabilities within
    PROBABILITY_ROUNDING, labels at least LABELS_ROUNDING identical, the same best epoch) or "different", with the
    first epoch whose figures are not bit-equal (parts_at_epoch) and the first beyond rounding.
    """
    import numpy as np

    original, reproduction = Path(original).absolute(), Path(reproduction).absolute()
    records = [read_provenance(original), read_provenance(reproduction)]
    if None in records:
        raise RunError(f"{original if records[0] is None else reproduction}: no {PROVENANCE} to compare")
    rec0, rec1 = records
    full = load_history(original)
    n = int(full["epoch"].max()) if epochs is None else int(epochs)
    h0, h1 = full[full["epoch"] <= n], load_history(reproduction)
    h1 = h1[h1["epoch"] <= n]
    columns0 = [c for c in h0.columns if c not in NOT_COMPARED]
    columns1 = [c for c in h1.columns if c not in NOT_COMPARED]
    common = [c for c in columns0 if c in columns1]
    missing_columns = sorted(set(columns0) ^ set(columns1))
    shared = [e for e in h0.index if e in h1.index]
    a, b = h0.loc[shared, common].astype(float), h1.loc[shared, common].astype(float)
    diff = (b - a).abs()
    exact = (a.to_numpy() == b.to_numpy()).all(axis=1)
    close = np.isclose(b.to_numpy(), a.to_numpy(), rtol=RTOL, atol=ATOL).all(axis=1)
    rows = dict(zip(shared, zip(exact, close)))
    epochs_all = [int(e) for e in h0.index]
    parts = next((e for e in epochs_all if not rows.get(e, (False, False))[0]), None)
    beyond = next((e for e in epochs_all if not rows.get(e, (False, False))[1]), None)

    best0, best1 = best_epoch(h0, rec0.select_on), best_epoch(h1, rec1.select_on)
    best_all = best_epoch(full, rec0.select_on)
    whole = best_all == best0  # the original's best.pt is from the epochs reproduced
    val = [_float_or_none((r.metrics.get("val") or {}).get("top1")) for r in records]
    note = None
    if not whole:
        note = (f"the original's best.pt is epoch {best_all}, after the {n} epochs reproduced: val top-1 at each best "
                "epoch from results.csv; test not compared")  # fmt: skip
    elif None in val:
        note = (
            "a best.pt not validated after training (interrupted, or stopped by a search): val top-1 from results.csv"
        )
    if note:
        val = [_float_or_none(h.loc[e, "val_top1"]) if e is not None else None for h, e in ((h0, best0), (h1, best1))]
    test, predictions = [None, None], None
    if whole and rec0.test and rec1.test:
        test = [_float_or_none(r.test.get("top1")) for r in records]
        evaluations = [_test_evaluation(original, rec0), _test_evaluation(reproduction, rec1)]
        predictions = _predictions(*evaluations) if None not in evaluations else None

    agree = not missing_columns and best0 == best1
    p = predictions or {"identical_labels": 1.0, "max_probability_difference": 0.0}
    bit_equal = (
        agree
        and parts is None
        and val[0] == val[1]
        and test[0] == test[1]
        and p["identical_labels"] == 1.0
        and p["max_probability_difference"] == 0.0
    )
    rounding = (
        agree
        and beyond is None
        and _close(*val)
        and _close(*test)
        and p["identical_labels"] >= LABELS_ROUNDING
        and p["max_probability_difference"] <= PROBABILITY_ROUNDING
    )
    verdict = VERDICTS[0] if bit_equal else VERDICTS[1] if rounding else VERDICTS[2]
    return {
        "schema": REPRODUCTION_SCHEMA,
        "reproduces": str(original),
        "run": str(reproduction),
        "verdict": verdict,
        "parts_at_epoch": parts,
        "beyond_rounding_at_epoch": beyond,
        "epochs": n,
        "epochs_recorded": int(full["epoch"].max()),
        "epochs_planned": rec0.epochs_planned,
        "history": {
            "columns": common,
            "missing_columns": missing_columns,
            "largest": {c: float(diff[c].max()) if len(diff) else None for c in common},
            "per_epoch": [{"epoch": int(e), **{c: float(diff.loc[e, c]) for c in common}} for e in shared],
        },
        "best_epoch": {"original": best0, "reproduction": best1},
        "val_top1": {"original": val[0], "reproduction": val[1], "from": "results.csv" if note else "best.pt"},
        "test_top1": {"original": test[0], "reproduction": test[1]} if test != [None, None] else None,
        "test_predictions": predictions,
        "note": note,
        "environment": _environment_differences(rec0, rec1),
        "tolerances": {"rtol": RTOL, "atol": ATOL, "probability": PROBABILITY_ROUNDING, "labels": LABELS_ROUNDING},
    }


def _environment_differences(rec0: Provenance, rec1: Provenance) -> dict:
    """What the two runs ran on where it differs: versions, commit, seeds, threads, GPU, device, AMP."""
    facts = [
        {**{f"versions.{k}": v for k, v in r.versions.items()}, **{f"environment.{k}": v for k, v in
         r.environment.items()}, "device": r.device, "amp": r.amp, "world_size": r.world_size}
        for r in (rec0, rec1)
    ]  # fmt: skip
    return {k: {"original": facts[0].get(k), "reproduction": facts[1].get(k)}
            for k in sorted(set(facts[0]) | set(facts[1])) if facts[0].get(k) != facts[1].get(k)}  # fmt: skip
