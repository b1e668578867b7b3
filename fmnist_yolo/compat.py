"""Every place fmnist-yolo changes Ultralytics' internals, in one module; checked against Ultralytics 8.4.190.

An Ultralytics upgrade that renames or removes one of these breaks `tests/test_compat.py` first, loudly.
Subclass seams (the fast trainer, the selection rule, the capturing validator) stay in their stages; the
internal methods they override are listed in SEAMS so the same test watches them too.
"""

from __future__ import annotations

import contextlib
import os
import sys
import warnings
from collections.abc import Iterator

SUPPORTED = ("8.4.190", "8.5")  # Ultralytics >= 8.4.190, < 8.5: pyproject.toml's range, where these patches are tested
CHECKED_AGAINST = SUPPORTED[0]  # the version these patches were read against
AMP_CHECK_WEIGHTS = "yolo26n.pt"  # what Ultralytics 8.4's check_amp downloads (a detection model) to test AMP

# (module, attribute) this module replaces or reads; (class, method) our subclasses override or rely on.
PATCHED = [
    ("ultralytics.engine.trainer", "autocast"),
    ("ultralytics.engine.trainer", "check_amp"),
    ("ultralytics.optim.muon", "muon_update"),
    ("ultralytics.optim.muon", "zeropower_via_newtonschulz5"),  # called, not replaced
    ("ultralytics.utils", "ARGV"),
    ("ultralytics.utils.callbacks.raytune", "callbacks"),
    ("ultralytics.engine.trainer", "TQDM"),  # the training bar's total: the fast path's chunks this epoch
    ("ultralytics.utils.callbacks.mlflow", "callbacks"),
]
SEAMS = [
    ("ultralytics.engine.trainer.BaseTrainer", "read_results_csv"),  # replaced where polars is missing
    ("ultralytics.engine.trainer.BaseTrainer", "_build_train_pipeline"),  # the fast loader's step plan
    ("ultralytics.engine.trainer.BaseTrainer", "_do_train"),  # the fast path's progress bar (progress_total)
    ("ultralytics.engine.trainer.BaseTrainer", "_get_warmup_iterations"),
    ("ultralytics.engine.trainer.BaseTrainer", "_load_checkpoint_state"),  # NaN recovery's EMA: plain BatchNorm
    ("ultralytics.engine.trainer.BaseTrainer", "label_loss_items"),  # the fast path's DeviceLoss, read exactly
    ("ultralytics.engine.trainer.BaseTrainer", "optimizer_step"),
    ("ultralytics.engine.trainer.BaseTrainer", "preprocess_batch"),
    ("ultralytics.engine.trainer.BaseTrainer", "setup_model"),  # channels_last on CPU in the fast path
    ("ultralytics.models.yolo.classify.ClassificationTrainer", "get_validator"),  # rebuilt: selection, DeviceValidator
    ("ultralytics.models.yolo.classify.ClassificationTrainer", "get_dataloader"),
    ("ultralytics.models.yolo.classify.ClassificationValidator", "update_metrics"),  # capturing, TTA, DeviceValidator
    ("ultralytics.models.yolo.classify.ClassificationValidator", "get_stats"),  # DeviceValidator
    ("ultralytics.models.yolo.classify.ClassificationValidator", "preprocess"),
    ("ultralytics.models.yolo.classify.ClassificationValidator", "get_dataloader"),
    ("ultralytics.utils.metrics.ClassifyMetrics", "fitness"),
]


def supported(version: str) -> bool:
    """Whether this Ultralytics version is in the supported range (SUPPORTED: lowest, first unsupported), by
    Ultralytics' own version comparison."""
    from ultralytics.utils.checks import check_version

    return check_version(version, f">={SUPPORTED[0]},<{SUPPORTED[1]}")


_VERSION_WARNED: list[str] = []


def check_version() -> bool:
    """Warn once (one line) when the installed Ultralytics is outside the supported range: the training loop's
    private parts patched here may differ there. Returns whether it is supported."""
    import ultralytics

    from .errors import warn

    version = ultralytics.__version__
    if supported(version):
        return True
    if version not in _VERSION_WARNED:
        _VERSION_WARNED.append(version)
        wanted = f"ultralytics>={SUPPORTED[0]},<{SUPPORTED[1]}"
        warn(f"Ultralytics {version} is not supported: fmnist-yolo supports {wanted} (pip install '{wanted}'); "
             "training may fail or differ")  # fmt: skip
    return False


# Lines of BaseTrainer._do_train the fast path's step relies on without overriding a method (training/fast/loop.py):
LOOP_CONTRACT = [
    "if ni - last_opt_step >= self.accumulate:",  # accumulate = -sys.maxsize: the chunk plan decides the steps
    "loss, self.loss_items = self.model(batch)",  # the model's criterion is ChunkLoss: the chunk's loss
    "batch = self.preprocess_batch(batch)",  # hands the chunk's micro-batches to MicroBatchNorm
    "nw = self._get_warmup_iterations(nb)",  # 0: the loop's own warm-up off, optimizer_step applies stock's
    "else {k: (self.tloss[k] * i + v) / (i + 1) for k, v in self.loss_items.items()}",  # DeviceLoss's arithmetic
]


def amp_agrees(model, imgsz: int = 64, dtype=None) -> bool:
    """Whether this classification model's class probabilities under autocast match FP32 on a fixed random batch."""
    import torch

    device = next(model.parameters()).device
    x = torch.rand(8, 3, imgsz, imgsz, generator=torch.Generator().manual_seed(0)).to(device)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            full = model(x)
            with torch.autocast(device.type, dtype=dtype or torch.float16):
                mixed = model(x)
    finally:
        model.train(was_training)
    full, mixed = (y[0] if isinstance(y, (list, tuple)) else y for y in (full, mixed))  # eval: (probs, logits)
    return bool(torch.isfinite(mixed).all() and (full - mixed.float()).abs().max() < 0.02)


def _on_accelerator(model) -> bool:
    """Whether Ultralytics' AMP check would test this model (it answers False itself on CPU and MPS)."""
    return next(model.parameters()).device.type not in {"cpu", "mps"}


@contextlib.contextmanager
def amp_check_offline() -> Iterator[None]:
    """Within: Ultralytics' AMP check tests the model being trained when its own test model is not at hand.

    Ultralytics 8.4 downloads yolo26n.pt to compare FP16 with FP32 and, when it cannot, keeps AMP on untested.
    Where that file is absent (offline, or never downloaded), this compares the model being trained instead: AMP
    stays on when FP16 agrees and is turned off, as Ultralytics does, when it does not. GPUs that Ultralytics
    knows to be broken in FP16 are still refused first, by Ultralytics' own check.
    """
    import ultralytics.engine.trainer as engine
    from ultralytics.utils import WEIGHTS_DIR

    original = engine.check_amp

    def check(model) -> bool:
        if not _on_accelerator(model) or (WEIGHTS_DIR / AMP_CHECK_WEIGHTS).is_file() or _known_bad_gpu(model):
            return original(model)
        # the module itself: Ultralytics compiles before its AMP check, and a compiled wrapper would compile two
        # extra graphs for this one check (batch 8 at 64 px) and mark batch and size dynamic for the whole run
        ok = amp_agrees(getattr(model, "_orig_mod", model))
        print(f"AMP: {'checks passed on the model itself' if ok else 'FP16 disagrees with FP32: AMP disabled'} "
              f"({AMP_CHECK_WEIGHTS} for Ultralytics' check is not available)", file=sys.stderr)  # fmt: skip
        return ok

    engine.check_amp = check
    try:
        yield
    finally:
        engine.check_amp = original


def _known_bad_gpu(model) -> bool:
    """GPUs whose FP16 Ultralytics 8.4's check_amp refuses by name (GTX 16xx, Quadro T-series, ...)."""
    import re

    import torch

    device = next(model.parameters()).device
    if device.type != "cuda":
        return False
    name = torch.cuda.get_device_name(device)
    return bool(re.search(r"(nvidia|geforce|quadro|tesla).*?(1660|1650|1630|t400|t550|t600|t1000|t1200|t2000|k40m)",
                          name, re.IGNORECASE))  # fmt: skip


def cpu_has_bf16() -> bool:
    """Whether this CPU computes bf16 natively (AVX-512 BF16 or AMX), so that bf16 autocast is worth having."""
    import torch

    return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())


@contextlib.contextmanager
def bf16_on_cpu() -> Iterator[None]:
    """Within: the trainer's `amp=bf16` also autocasts on a CPU, in bf16 where the CPU computes it natively.

    Ultralytics 8.4's autocast refuses bf16 outside CUDA (training fails); torch autocasts convolutions and matrix
    products to bf16 on CPU as well; whether that beats fp32 depends on the CPU (benchmarks/RESULTS.md, "amp=bf16
    on this CPU"). A CPU without native bf16 trains in fp32, with a warning, as Ultralytics turns AMP off where it
    cannot use it. Weights, EMA, optimizer and validation stay fp32.
    """
    import torch
    import ultralytics.engine.trainer as engine
    from ultralytics.utils import LOGGER

    original = engine.autocast
    warned = []

    def autocast(enabled, device: str = "cuda"):
        if enabled is torch.bfloat16 and device == "cpu":
            if cpu_has_bf16():
                return torch.autocast("cpu", dtype=torch.bfloat16)
            if not warned:
                LOGGER.warning("amp=bf16: this CPU has no native bf16 (AVX-512 BF16, AMX); training in fp32")
                warned.append(True)
            return torch.autocast("cpu", enabled=False)
        return original(enabled, device=device)

    engine.autocast = autocast
    try:
        yield
    finally:
        engine.autocast = original


@contextlib.contextmanager
def not_the_yolo_cli() -> Iterator[None]:
    """Ultralytics treats a process whose argv[0] ends in 'yolo' (so `fmnist-yolo`) as its own CLI and then
    predicts without returning results; hide the name for the call."""
    from ultralytics.utils import ARGV

    saved = ARGV[0] if ARGV else None
    if saved is not None:
        ARGV[0] = "fmnist-yolo-api"  # anything not ending in "yolo"
    try:
        yield
    finally:
        if saved is not None:
            ARGV[0] = saved


@contextlib.contextmanager
def quiet_ray_outside_searches() -> Iterator[None]:
    """With Ray installed, Ultralytics' Ray Tune callback asks Ray for a trial id after every epoch, and Ray warns
    each time it is asked outside a search; silence that one warning while training."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="`get_trial_id` is meant to only be called inside")
        yield


def drop_stock_raytune_reporter() -> None:
    """In a tune trial's worker: Ultralytics' own Ray Tune callback also reports the final evaluation of best.pt as
    epoch N+1, which ASHA takes for one more epoch; the trial reports through fmnist-yolo's callback only."""
    import ultralytics.utils.callbacks.raytune as stock_reporter

    stock_reporter.callbacks = {}


@contextlib.contextmanager
def progress_total(batches) -> Iterator[None]:
    """Within: the training progress bar counts to `batches()` (this epoch's real number of iterations) where that is
    not None, instead of the one length Ultralytics reads before the first epoch. The fast path fuses a step's
    micro-batches into one iteration, and warm-up steps fuse fewer, so its epochs differ in length (the default
    recipe's first epoch has 2,292 chunks, the later ones 861): the bar ran to 266 %."""
    import ultralytics.engine.trainer as engine

    original = engine.TQDM

    def bar(iterable=None, *args, total=None, **kwargs):
        n = batches()
        return original(iterable, *args, total=total if n is None else n, **kwargs)

    engine.TQDM = bar
    try:
        yield
    finally:
        engine.TQDM = original


def _has_polars() -> bool:
    try:
        import polars  # noqa: F401
    except ImportError:
        return False
    return True


@contextlib.contextmanager
def results_without_polars() -> Iterator[None]:
    """Within, where polars is not installed: the trainer reads results.csv into each checkpoint with pandas.

    Ultralytics 8.4 imports polars only there (and for plots) while training; its runtime is a 31 MB carry to an
    offline GPU machine (benchmarks/gpu_carry.sh) that this reader spares. The same dict of columns as polars'
    `to_dict(as_series=False)`; {} when the file cannot be read, as Ultralytics answers.
    """
    if _has_polars():
        yield
        return
    import pandas as pd
    from ultralytics.engine.trainer import BaseTrainer

    original = BaseTrainer.read_results_csv

    def read_results_csv(self) -> dict:
        try:
            return pd.read_csv(self.csv).to_dict(orient="list")
        except Exception:
            return {}

    BaseTrainer.read_results_csv = read_results_csv
    try:
        yield
    finally:
        BaseTrainer.read_results_csv = original


MLFLOW_OFF_ENV = "FMNIST_YOLO_MLFLOW_OFF"  # set while a mlflow=False run trains: read by its DDP workers' trainers


@contextlib.contextmanager
def stock_mlflow(enabled: bool = True) -> Iterator[None]:
    """Within, when not `enabled` (mlflow=False): no trainer gets Ultralytics' MLflow callback, which its `mlflow`
    setting would add (and which starts a run of its own when none is active). The trainers of DDP workers, built in
    other processes, learn it from MLFLOW_OFF_ENV (drop_stock_mlflow_if_off)."""
    from ultralytics.utils import SETTINGS

    if enabled or SETTINGS.get("mlflow") is not True:  # setting off: no trainer adds it (nor imports mlflow for it)
        yield
        return
    import ultralytics.utils.callbacks.mlflow as stock

    original, before = stock.callbacks, os.environ.get(MLFLOW_OFF_ENV)
    stock.callbacks = {}  # add_integration_callbacks reads the module's dict when each trainer is made
    os.environ[MLFLOW_OFF_ENV] = "1"
    try:
        yield
    finally:
        stock.callbacks = original
        if before is None:
            os.environ.pop(MLFLOW_OFF_ENV, None)
        else:
            os.environ[MLFLOW_OFF_ENV] = before


def drop_stock_mlflow_if_off() -> None:
    """In a trainer being built: without Ultralytics' MLflow callback when its run said mlflow=False (a DDP worker
    inherits that through the environment; in the training process stock_mlflow has already done it)."""
    if os.environ.get(MLFLOW_OFF_ENV) == "1":
        import ultralytics.utils.callbacks.mlflow as stock

        stock.callbacks = {}


@contextlib.contextmanager
def training() -> Iterator[None]:
    """Every patch a training run enters: the offline AMP check, bf16 on CPU, the faster MuSGD step, quiet Ray, and
    results.csv read without polars where it is missing. Outside the supported Ultralytics versions, a warning first."""
    check_version()
    with amp_check_offline(), bf16_on_cpu(), faster_muon(), quiet_ray_outside_searches(), results_without_polars():
        yield


def muon_update_unpadded(grads, momentums, beta: float = 0.95, nesterov: bool = True):
    """Ultralytics 8.4's muon_update, orthogonalising matrices of one shape together instead of zero-padding a
    bucket to its largest (up to 16x the rows): the same result to bf16 rounding, and faster where the step is
    compute-bound, as on a CPU (benchmarks/bench_musgd.py; benchmarks/RESULTS.md, "MuSGD's step").
    On CUDA each shape's orthogonalisation replays a CUDA graph (see `orthogonalise`)."""
    import torch

    single = isinstance(grads, torch.Tensor)
    grads, momentums = ([grads], [momentums]) if single else (grads, momentums)
    updates = muon_momentum_then_orthogonalise(grads, momentums, beta, nesterov)
    return updates[0] if single else updates


def muon_momentum_then_orthogonalise(grads: list, momentums: list, beta, nesterov: bool) -> list:
    """muon_update's two halves: the momentum (in place) and its Nesterov blend, then each same-shape group of the
    updates orthogonalised together. `beta` is a number (stock's arithmetic, bit for bit: the momentum buffers equal
    Ultralytics', which tests/test_compat.py holds) or a device tensor (the captured step's: the same values to
    rounding, read from the device at each replay)."""
    import torch

    if isinstance(beta, torch.Tensor):
        torch._foreach_mul_(momentums, beta)
        torch._foreach_add_(momentums, torch._foreach_mul(grads, 1 - beta))
        if nesterov:
            updates = list(torch._foreach_mul(momentums, beta))
            torch._foreach_add_(updates, torch._foreach_mul(grads, 1 - beta))
    else:
        torch._foreach_mul_(momentums, beta)
        torch._foreach_add_(momentums, grads, alpha=1 - beta)
        if nesterov:
            updates = list(torch._foreach_mul(momentums, beta))
            torch._foreach_add_(updates, grads, alpha=1 - beta)
    if not nesterov:
        updates = list(momentums)
    shapes: dict[tuple, list[int]] = {}
    mats, strides = [], []
    for i, u in enumerate(updates):
        # a channels_last filter flattens as a view in its own (out, kh, kw, in) order, as Ultralytics does:
        # Newton-Schulz permutes its columns alike, and the write-back below restores the layout
        nhwc = u.ndim == 4 and not u.is_contiguous() and u.is_contiguous(memory_format=torch.channels_last)
        mats.append(u.permute(0, 2, 3, 1).flatten(1) if nhwc else u.reshape(u.shape[0], -1))
        strides.append(u.stride() if nhwc else None)
        shapes.setdefault((*mats[i].shape, u.device, u.dtype), []).append(i)
    for members in shapes.values():
        scales = tuple(max(1, grads[i].size(-2) / grads[i].size(-1)) ** 0.5 for i in members)  # as Ultralytics
        X = orthogonalise([mats[i] for i in members], scales, grads[members[0]].dtype)
        for j, i in enumerate(members):
            s = strides[i]
            updates[i] = X[j].as_strided(grads[i].shape, s) if s else X[j].reshape(grads[i].shape)
    return updates


def _newton_schulz_scaled(X, scale):
    """Ultralytics' Newton-Schulz orthogonalisation of a (B, rows, cols) stack, cast back and scaled per matrix."""
    import torch
    from ultralytics.optim.muon import zeropower_via_newtonschulz5

    # row-major (Newton-Schulz returns tall matrices transposed): the write-back reads each matrix as a row-major block
    return zeropower_via_newtonschulz5(X).to(scale.dtype, memory_format=torch.contiguous_format) * scale


_NS_GRAPHS: dict[tuple, tuple] = {}  # (count, rows, cols, dtypes, device, scales) -> (input, scale, output, graph)
_NS_GRAPHS_BROKEN: list[str] = []  # a capture failed once (the reason): eager from then on, said once
_SCALES: dict[tuple, object] = {}  # (scales, device, dtype) -> their (B, 1, 1) tensor, made once per shape


def _scale_tensor(scales: tuple[float, ...], device, dtype):
    """The per-matrix scales as a device tensor, built once: a copy to the device per shape per step blocks the host,
    and is illegal inside a CUDA graph capture."""
    import torch

    key = (scales, device, dtype)
    if key not in _SCALES:
        _SCALES[key] = torch.tensor(scales, dtype=dtype).view(-1, 1, 1).to(device)
    return _SCALES[key]


def capture_graph(fn, device, warmup: int = 2):
    """Run `fn` `warmup` times on a side stream, then capture one call of it as a CUDA graph: (graph, its output).

    `capture_error_mode="thread_local"`: in the default global mode, a CUDA call from any other thread during the
    capture (the stock loader's pin-memory thread, say) invalidates it; here only this thread's calls count.
    """
    import torch

    side = torch.cuda.Stream(device)
    side.wait_stream(torch.cuda.current_stream(device))
    with torch.cuda.stream(side):  # warm-up off the capture: cuBLAS handles, workspaces, lazy state
        for _ in range(warmup):
            fn()
    torch.cuda.current_stream(device).wait_stream(side)
    graph, main = torch.cuda.CUDAGraph(), torch.cuda.current_stream(device)
    try:
        with torch.cuda.graph(graph, capture_error_mode="thread_local"):
            out = fn()
    except BaseException:
        torch.cuda.set_stream(main)  # a failed capture_end leaves the capture stream current (torch 2.14)
        raise
    return graph, out


def capture_failed(what: str, error: BaseException, broken: list[str]) -> None:
    """Record a refused capture in `broken` and say so once: the eager path computes the same, more slowly."""
    from ultralytics.utils import LOGGER

    reason = str(error).splitlines()[0] if str(error) else type(error).__name__
    if not broken:
        LOGGER.warning(f"CUDA graph capture of {what} failed ({reason}); it runs eagerly from now on (slower)")
    broken.append(reason)


def _graphable(device) -> bool:
    """Whether per-shape CUDA graphs apply: on CUDA, and not already inside a capture (the outer graph holds it)."""
    import torch

    return device.type == "cuda" and not torch.cuda.is_current_stream_capturing()


def orthogonalise(mats: list, scales: tuple[float, ...], dtype):
    """Newton-Schulz orthogonalisation of same-shape matrices: (B, rows, cols) in `dtype`, matrix j times scales[j].

    On CUDA the 15 matrix products and the elementwise work of one shape run as one replayed CUDA graph: launched
    one by one, they made a yolo11n-cls step mostly launch overhead (benchmarks/RESULTS.md, "MuSGD's Newton–Schulz
    step on CUDA"). The graph reads a fixed input buffer (the stack is written into it) and its output is
    overwritten by the next replay.
    """
    import torch

    device = mats[0].device
    scale = _scale_tensor(scales, device, dtype)
    if not _graphable(device) or _NS_GRAPHS_BROKEN:
        return _newton_schulz_scaled(torch.stack(mats), scale)
    key = (len(mats), *mats[0].shape, mats[0].dtype, dtype, device, scales)
    entry = _NS_GRAPHS.get(key)
    if entry is None:
        static_in = torch.stack(mats)
        try:
            graph, static_out = capture_graph(lambda: _newton_schulz_scaled(static_in, scale), device)
        except RuntimeError as e:  # a capture the runtime refuses: the eager path is the same computation
            capture_failed("MuSGD's orthogonalisation", e, _NS_GRAPHS_BROKEN)
            return _newton_schulz_scaled(static_in, scale)
        entry = _NS_GRAPHS[key] = (static_in, scale, static_out, graph)
    static_in, _, static_out, graph = entry
    torch.stack(mats, out=static_in)
    graph.replay()
    return static_out


@contextlib.contextmanager
def faster_muon() -> Iterator[None]:
    """Within: MuSGD steps with muon_update_unpadded (see there); Ultralytics' own function is put back after."""
    import ultralytics.optim.muon as muon

    original = muon.muon_update
    muon.muon_update = muon_update_unpadded
    try:
        yield
    finally:
        muon.muon_update = original
