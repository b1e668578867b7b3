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


def test_checked_against_the_installed_major_minor():
    import ultralytics

    assert ultralytics.__version__.split(".")[:2] == compat.CHECKED_AGAINST.split(".")[:2], (
        f"fmnist_yolo.compat was checked against Ultralytics {compat.CHECKED_AGAINST}, found {ultralytics.__version__}"
    )


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
