"""The Ultralytics internals fmnist-yolo patches or overrides still exist, and the patches do what they say."""

import importlib

import pytest

from fmnist_yolo import compat
from tests.conftest import cpu_flags_say_bf16


@pytest.mark.parametrize("module, name", compat.PATCHED)
def test_patched_names_exist(module, name):
    """An Ultralytics upgrade that renames one of these must fail here, not silently skip the patch."""
    assert hasattr(importlib.import_module(module), name), f"{module}.{name} is gone: review fmnist_yolo/compat.py"


@pytest.mark.parametrize("owner, name", compat.SEAMS)
def test_overridden_methods_exist(owner, name):
    module, _, cls = owner.rpartition(".")
    klass = getattr(importlib.import_module(module), cls)
    assert hasattr(klass, name), f"{owner}.{name} is gone: review the subclass that overrides it"


@pytest.mark.parametrize("line", compat.LOOP_CONTRACT)
def test_the_training_loop_still_reads_as_the_fast_path_relies_on(line):
    """The fast path's step leans on these lines of Ultralytics' loop (an attribute, the criterion, the warm-up)."""
    import inspect

    from ultralytics.engine.trainer import BaseTrainer

    source = " ".join(inspect.getsource(BaseTrainer._do_train).split())
    assert " ".join(line.split()) in source, "BaseTrainer._do_train changed: review fmnist_yolo/training/fast/loop.py"


def test_checked_against_the_installed_major_minor():
    import ultralytics

    assert ultralytics.__version__.split(".")[:2] == compat.CHECKED_AGAINST.split(".")[:2], (
        f"fmnist_yolo.compat was checked against Ultralytics {compat.CHECKED_AGAINST}, found {ultralytics.__version__}"
    )


def test_supported_range_is_pyprojects_and_outside_it_one_warning(monkeypatch):
    """pyproject.toml declares the tested range; an Ultralytics outside it gets one line naming the supported range."""
    import re
    import warnings

    import ultralytics

    from fmnist_yolo.errors import FmnistWarning
    from tests.conftest import ROOT

    declared = re.search(r'"ultralytics([^"]*)"', (ROOT / "pyproject.toml").read_text()).group(1)
    assert declared == f">={compat.SUPPORTED[0]},<{compat.SUPPORTED[1]}"
    assert compat.supported(compat.CHECKED_AGAINST) and compat.supported(ultralytics.__version__)
    assert [compat.supported(v) for v in ("8.3.0", "8.4.189", "8.4.190", "8.4.999", "8.5.0", "8.5.0rc1", "9.0")] == [
        False, False, True, True, False, False, False]  # fmt: skip
    monkeypatch.setattr(compat, "_VERSION_WARNED", [])
    for version, says in (("8.3.0", True), ("8.5.1", True), ("8.4.190", False)):
        monkeypatch.setattr(ultralytics, "__version__", version)
        for call in (compat.training, compat.training):  # what every training run enters; said once per version
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                with call():
                    pass
            lines = [str(w.message) for w in caught if issubclass(w.category, FmnistWarning)]
            assert len(lines) == says, lines
            says = False
            if lines:
                assert "\n" not in lines[0] and f"Ultralytics {version} is not supported" in lines[0]
                assert f"ultralytics>={compat.SUPPORTED[0]},<{compat.SUPPORTED[1]}" in lines[0]


def test_evaluation_warns_outside_the_supported_range_too(monkeypatch):
    import ultralytics

    from fmnist_yolo.errors import ConfigError, FmnistWarning
    from fmnist_yolo.evaluation.evaluate import evaluate

    monkeypatch.setattr(compat, "_VERSION_WARNED", [])
    monkeypatch.setattr(ultralytics, "__version__", "8.5.0")
    with pytest.warns(FmnistWarning, match="Ultralytics 8.5.0 is not supported"), pytest.raises(ConfigError):
        evaluate("no-such-weights.pt")


def test_argv_hidden_only_within():
    from ultralytics.utils import ARGV

    before = list(ARGV)
    with compat.not_the_yolo_cli():
        assert not ARGV or not ARGV[0].endswith("yolo")
    assert list(ARGV) == before


# --- mixed precision offline ---------------------------------------------------------------


def test_amp_agrees_catches_fp16_overflow():
    import torch
    from ultralytics.nn.tasks import ClassificationModel

    from fmnist_yolo.compat import amp_agrees

    torch.manual_seed(0)
    model = ClassificationModel("yolo11n-cls.yaml", nc=10, verbose=False)
    assert amp_agrees(model, imgsz=32, dtype=torch.float16)
    with torch.no_grad():
        model.model[-1].linear.bias.fill_(1e5)  # logits beyond FP16's range (65504): inf, then NaN probabilities
    assert not amp_agrees(model, imgsz=32, dtype=torch.float16)
    assert model.training  # left in the mode it was given in


def test_amp_check_offline_tests_the_model_not_a_download(monkeypatch):
    import torch
    import ultralytics.engine.trainer as engine

    ft = compat

    original = engine.check_amp
    calls = []
    monkeypatch.setattr(ft, "amp_agrees", lambda model: calls.append(model) or False)
    monkeypatch.setattr(ft, "AMP_CHECK_WEIGHTS", "absent-for-this-test.pt")
    accelerator_model = torch.nn.Linear(2, 2, device="meta")  # neither cpu nor mps: the accelerator path
    with ft.amp_check_offline():
        assert engine.check_amp is not original
        assert engine.check_amp(accelerator_model) is False and calls == [accelerator_model]
        assert engine.check_amp(torch.nn.Linear(2, 2)) is False  # CPU: Ultralytics' own answer (no AMP on CPU)
    assert engine.check_amp is original and len(calls) == 1


def _cuda_or_skip(device: str) -> None:
    import torch

    if device == "cuda" and not torch.cuda.is_available():
        pytest.skip("no CUDA device")


@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
@pytest.mark.parametrize("device", ["cpu", "cuda"])
def test_unpadded_muon_update_equals_ultralytics_to_bf16_rounding(device, layout):
    import torch
    from ultralytics.nn.tasks import ClassificationModel
    from ultralytics.optim import muon

    _cuda_or_skip(device)
    torch.manual_seed(0)
    model = ClassificationModel("yolo11n-cls.yaml", nc=10, verbose=False).to(device)
    if layout == "channels_last":  # the fast path's layout on CPU and CUDA: filters flatten in (out, kh, kw, in) order
        model = model.to(memory_format=torch.channels_last)
    params = [p for p in model.parameters() if p.ndim in (2, 4)]
    grads = [torch.randn_like(p) for p in params]
    ours_m, stock_m = [torch.randn_like(p) for p in params], None
    stock_m = [m.clone() for m in ours_m]
    ours = compat.muon_update_unpadded(grads, ours_m, beta=0.9)
    stock = muon.muon_update(grads, stock_m, beta=0.9)
    assert len({tuple(p.shape) for p in params}) < len(params)  # some shapes repeat: batched together
    for a, b, ma, mb in zip(ours, stock, ours_m, stock_m, strict=True):
        formats = (torch.contiguous_format, torch.channels_last) if a.ndim == 4 else (torch.contiguous_format,)
        assert a.shape == b.shape and torch.equal(ma, mb)  # the momentum buffers exactly
        assert [a.is_contiguous(memory_format=f) for f in formats] == [
            b.is_contiguous(memory_format=f) for f in formats
        ]
        assert (a - b).norm() <= 0.03 * b.norm()  # the orthogonalised update to bf16 rounding (stock vs stock: ~0)
    single = compat.muon_update_unpadded(grads[3], ours_m[3].clone(), beta=0.9)
    assert single.shape == grads[3].shape


def test_cuda_graph_replays_equal_the_eager_orthogonalisation():
    """Fresh inputs through a captured graph give what the eager computation gives: the replay reads its new input."""
    import torch

    _cuda_or_skip("cuda")
    compat._NS_GRAPHS.clear()
    scales = (1.0, 2.0, 0.5)
    for seed in range(3):  # the first call captures, the next ones replay
        g = torch.Generator(device="cuda").manual_seed(seed)
        mats = [torch.randn(24, 40, device="cuda", generator=g) for _ in scales]
        graphed = compat.orthogonalise(mats, scales, torch.float32).clone()
        eager = compat._newton_schulz_scaled(torch.stack(mats), torch.tensor(scales, device="cuda").view(-1, 1, 1))
        assert torch.equal(graphed, eager), seed
    assert len(compat._NS_GRAPHS) == 1 and not compat._NS_GRAPHS_BROKEN


def test_faster_muon_is_used_in_training_and_put_back():
    import ultralytics.optim.muon as muon

    original = muon.muon_update
    with compat.faster_muon():
        assert muon.muon_update is compat.muon_update_unpadded
    assert muon.muon_update is original


def test_bf16_autocast_on_a_cpu_that_has_it_and_put_back(monkeypatch):
    """Ultralytics' trainer refuses bf16 autocast off CUDA (training fails); within `training()` a bf16-native CPU
    autocasts, and any other CPU trains in fp32."""
    import torch
    import ultralytics.engine.trainer as engine

    native = cpu_flags_say_bf16()  # the answer from the CPU's flags, not from the function under test
    assert compat.cpu_has_bf16() is native
    original = engine.autocast
    x = torch.randn(4, 8)
    with compat.training():
        assert engine.autocast is not original
        if native:
            with engine.autocast(torch.bfloat16, device="cpu"):
                assert (x @ x.T).dtype == torch.bfloat16
        monkeypatch.setattr(compat, "cpu_has_bf16", lambda: False)
        with engine.autocast(torch.bfloat16, device="cpu"):  # fp32, as Ultralytics turns AMP off where it cannot
            assert (x @ x.T).dtype == torch.float32
        monkeypatch.undo()
        with engine.autocast(False, device="cpu"):  # everything else is Ultralytics' autocast
            assert (x @ x.T).dtype == torch.float32
    assert engine.autocast is original
    with pytest.raises(RuntimeError, match="bfloat16"):
        original(torch.bfloat16, device="cpu")  # why the patch exists; gone from Ultralytics: review compat


# --- CUDA graphs, checked on CPU with fakes ----------------------------------------------------


class _FakeCuda:
    """Stand-ins for torch.cuda's streams and graphs that record how a capture was asked for."""

    def __init__(self, fail: bool = False):
        import contextlib

        self.fail, self.modes, self.replays, self.set_streams = fail, [], 0, []
        fake = self

        class Graph:
            def replay(self):
                fake.replays += 1

        @contextlib.contextmanager
        def graph(g, capture_error_mode="global", **kw):
            fake.modes.append(capture_error_mode)
            if fake.fail:
                raise RuntimeError("operation not permitted when stream is capturing\nmore")
            yield

        class Stream:
            def __init__(self, *a, **k):
                pass

            def wait_stream(self, other):
                pass

        self.CUDAGraph, self.graph, self.Stream, self.main = Graph, graph, Stream, Stream()
        self.stream = lambda s: contextlib.nullcontext()
        self.current_stream = lambda device=None: self.main
        self.set_stream = self.set_streams.append
        self.is_current_stream_capturing = lambda: False


def _fake_cuda(monkeypatch, fail=False):
    import torch

    fake = _FakeCuda(fail)
    names = ("CUDAGraph", "graph", "Stream", "stream", "current_stream", "set_stream", "is_current_stream_capturing")
    for name in names:
        monkeypatch.setattr(torch.cuda, name, getattr(fake, name))
    monkeypatch.setattr(compat, "_graphable", lambda device: True)  # CPU tensors take the CUDA path
    monkeypatch.setattr(compat, "_NS_GRAPHS", {})
    monkeypatch.setattr(compat, "_NS_GRAPHS_BROKEN", [])
    return fake


def test_capture_is_thread_local_so_other_threads_cannot_break_it(monkeypatch):
    """Review finding 1: a global-mode capture is broken by any other thread's CUDA call (a pin-memory thread)."""
    import torch

    fake = _fake_cuda(monkeypatch)
    mats = [torch.randn(8, 12) for _ in range(2)]
    compat.orthogonalise(mats, (1.0, 1.0), torch.float32)
    compat.orthogonalise(mats, (1.0, 1.0), torch.float32)
    assert fake.modes == ["thread_local"] and fake.replays == 2  # captured once, replayed each call


def test_a_refused_capture_is_said_once_and_computes_the_same(monkeypatch):
    """Review finding 1: the fallback was silent, so a run stayed eager without anyone knowing."""
    import torch
    from ultralytics.utils import LOGGER

    fake = _fake_cuda(monkeypatch, fail=True)
    said = []
    monkeypatch.setattr(LOGGER, "warning", lambda msg, *a, **k: said.append(msg))
    mats = [torch.randn(8, 12, generator=torch.Generator().manual_seed(i)) for i in range(2)]
    out = [compat.orthogonalise(mats, (1.0, 2.0), torch.float32) for _ in range(3)]
    assert len(said) == 1 and "CUDA graph capture" in said[0] and "operation not permitted" in said[0]
    assert len(compat._NS_GRAPHS_BROKEN) == 1  # then eager without trying again
    assert fake.set_streams == [fake.main]  # torch leaves the capture stream current when capture_end raises
    eager = compat._newton_schulz_scaled(torch.stack(mats), torch.tensor([1.0, 2.0]).view(-1, 1, 1))
    assert all(torch.equal(o, eager) for o in out)


def test_eager_orthogonalisation_builds_its_scales_once(monkeypatch):
    """Review finding 2: a host-to-device copy of the scales per shape per step (blocking; illegal in a capture)."""
    import torch

    monkeypatch.setattr(compat, "_SCALES", {})
    made = []
    real = torch.tensor
    monkeypatch.setattr(torch, "tensor", lambda *a, **k: made.append(a) or real(*a, **k))
    mats = [torch.randn(6, 9) for _ in range(3)]
    for _ in range(4):
        compat.orthogonalise(mats, (1.0, 0.5, 2.0), torch.float32)
    assert len(made) == 1


def test_amp_check_tests_the_module_not_its_compiled_wrapper(monkeypatch):
    """Review finding 3: Ultralytics compiles before check_amp; the check on the wrapper compiled two extra graphs."""
    import torch
    import ultralytics.engine.trainer as engine

    seen = []
    monkeypatch.setattr(compat, "amp_agrees", lambda model: seen.append(model) or True)
    monkeypatch.setattr(compat, "AMP_CHECK_WEIGHTS", "absent-for-this-test.pt")
    module = torch.nn.Linear(2, 2, device="meta")
    compiled = torch.compile(module)  # lazy: nothing compiles unless it is called
    with compat.amp_check_offline():
        assert engine.check_amp(compiled) is True
    assert seen == [module]


def test_results_read_into_checkpoints_without_polars(tmp_path, monkeypatch):
    """An offline GPU machine without polars (31 MB to carry) trains: results.csv is read as polars reads it."""
    import sys
    from types import SimpleNamespace

    from ultralytics.engine.trainer import BaseTrainer

    csv = tmp_path / "results.csv"
    csv.write_text("epoch,time,train/loss,metrics/accuracy_top1\n1,12.5,2.30195,0.1\n2,6.25,2.1,0.25\n")
    trainer = SimpleNamespace(csv=csv)
    with_polars = BaseTrainer.read_results_csv(trainer)
    assert with_polars["train/loss"] == [2.30195, 2.1]
    monkeypatch.setitem(sys.modules, "polars", None)  # import polars now raises ImportError
    with compat.results_without_polars():
        assert BaseTrainer.read_results_csv(trainer) == with_polars
        assert BaseTrainer.read_results_csv(SimpleNamespace(csv=tmp_path / "missing.csv")) == {}
    with pytest.raises(ImportError):
        BaseTrainer.read_results_csv(trainer)  # Ultralytics' own, put back


def test_stock_mlflow_off_within_and_in_workers(monkeypatch):
    """mlflow=False: no Ultralytics MLflow callback for trainers made within, nor in DDP workers (the environment)."""
    import os

    from ultralytics.utils import SETTINGS
    from ultralytics.utils.callbacks import mlflow as stock

    monkeypatch.setitem(SETTINGS, "mlflow", True)  # Ultralytics' setting on: its callback would be added
    original = stock.callbacks
    monkeypatch.delenv(compat.MLFLOW_OFF_ENV, raising=False)
    with compat.stock_mlflow(True):
        assert stock.callbacks is original and compat.MLFLOW_OFF_ENV not in os.environ
    with compat.stock_mlflow(False):
        assert stock.callbacks == {} and os.environ[compat.MLFLOW_OFF_ENV] == "1"
    assert stock.callbacks is original and compat.MLFLOW_OFF_ENV not in os.environ
    monkeypatch.setattr(stock, "callbacks", original)  # put back after the worker's change below
    compat.drop_stock_mlflow_if_off()
    assert stock.callbacks is original
    monkeypatch.setenv(compat.MLFLOW_OFF_ENV, "1")  # as a DDP worker of a mlflow=False run inherits it
    compat.drop_stock_mlflow_if_off()
    assert stock.callbacks == {}
