"""Batched RandAugment: each operation gives stock's pixels (torchvision on a PIL image) exactly; the policy is drawn
per image."""

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.transforms import InterpolationMode
from torchvision.transforms.autoaugment import RandAugment, _apply_op

from fmnist_yolo.training import randaugment as ra
from fmnist_yolo.training.fast import Augment

SIZE = 32
SIZES = [32, 64]  # the default recipe's imgsz=28 trains at 32, the strong recipe at 64


def _images(n: int = 16, size: int = SIZE) -> torch.Tensor:
    """(n, 1, size, size) uint8: noise, low-contrast images, one flat image, one of two adjacent grey levels and a ramp
    over 0-248 (degenerate cases for several ops)."""
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (n, 1, size, size), generator=g, dtype=torch.uint8)
    x[:4] = (torch.rand(4, 1, size, size, generator=g) * 60 + 100).to(torch.uint8)
    x[4] = 77
    x[5] = 100 + (torch.arange(size * size).view(1, size, size) % 2)  # two adjacent grey levels (AutoContrast's edge)
    x[6] = torch.arange(size * size).view(1, size, size) % 249  # 0-248: 248 * (255 / 248) lands a hair above 255
    return x


def _stock(x: torch.Tensor, name: str, sign: float) -> torch.Tensor:
    """The operation as stock applies it at RandAugment's default magnitude (bin 9 of 31): torchvision's `_apply_op`
    on each image as the RGB PIL image Ultralytics' ClassificationDataset hands it, bilinear, fill 0."""
    space = RandAugment()._augmentation_space(31, tuple(x.shape[-2:]))
    magnitudes, signed = space[name]
    magnitude = float(magnitudes[9]) if magnitudes.ndim else 0.0
    magnitude *= sign if signed else 1.0
    out = []
    for im in x:
        pil = Image.fromarray(im[0].numpy()).convert("RGB")
        rgb = np.asarray(_apply_op(pil, name, magnitude, InterpolationMode.BILINEAR, None))
        assert (rgb == rgb[..., :1]).all()  # grey in, grey out
        out.append(torch.from_numpy(rgb[None, ..., 0].copy()))
    return torch.stack(out)


def _ours(x: torch.Tensor, ops: list[str], signs: list[float]) -> torch.Tensor:
    n = len(x)
    op = torch.tensor([[ra.OPS.index(o) for o in ops]] * n)
    sign = torch.tensor([signs] * n)
    return (ra.rand_augment(x.float() / 255, op, sign) * 255).round().to(torch.uint8)


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("sign", [-1.0, 1.0])
@pytest.mark.parametrize("name", ra.OPS)
def test_each_operation_is_stocks_pixel_for_pixel(name, sign, size):
    x = _images(size=size)
    ours, ref = _ours(x, [name, "Identity"], [sign, 1.0]), _stock(x, name, sign)
    # exact: rounding where PIL truncates moved a third of the shears' and rotations' pixels (+0.3 levels on average),
    # torchvision's blend a few percent of Contrast's
    assert torch.equal(ours, ref), (name, (ours.int() - ref.int()).abs().gt(0).float().mean().item())
    if name != "Identity" and name != "Color":  # colour is a no-op on grey images, in torchvision as here
        assert not torch.equal(ours, x), name  # and the operation does something


@pytest.mark.parametrize("size", SIZES)
def test_operations_apply_in_order(size):
    x = _images(size=size)
    for first, second in [("Rotate", "Equalize"), ("Solarize", "ShearX"), ("Contrast", "TranslateY")]:
        ours = _ours(x, [first, second], [1.0, -1.0])
        assert torch.equal(ours, _stock(_stock(x, first, 1.0), second, -1.0)), (first, second)
        swapped = _ours(x, [second, first], [-1.0, 1.0])
        assert not torch.equal(ours, swapped)


def test_each_image_takes_its_own_operation():
    x = _images(len(ra.OPS))
    op = torch.stack([torch.arange(len(ra.OPS)), torch.zeros(len(ra.OPS), dtype=torch.long)], 1)
    out = (ra.rand_augment(x.float() / 255, op, torch.ones(len(ra.OPS), 2)) * 255).round().to(torch.uint8)
    for i, name in enumerate(ra.OPS):
        one = _ours(x[i : i + 1], [name, "Identity"], [1.0, 1.0])
        assert torch.equal(out[i : i + 1], one), name


@pytest.mark.parametrize("size", SIZES)
def test_magnitudes_are_torchvisions_defaults(size):
    space = RandAugment()._augmentation_space(31, (size, size))
    assert ra.OPS == tuple(space)  # the same 14 operations in the same order
    assert RandAugment().num_ops == ra.NUM_OPS and RandAugment().magnitude == ra.MAGNITUDE
    expected = {"ShearX": ra.SHEAR, "Rotate": ra.ROTATE, "Brightness": ra.ENHANCE, "Solarize": ra.SOLARIZE,
                "Posterize": ra.POSTERIZE_BITS}  # fmt: skip
    for name, value in expected.items():
        assert float(space[name][0][9]) == pytest.approx(value), name
    # pixels, truncated as torchvision does: 4 at 32, 8 at 64
    assert int(space["TranslateX"][0][9]) == ra.translate_pixels(size) == {32: 4, 64: 8}[size]


def test_policy_is_drawn_per_image_and_only_when_on():
    g = torch.Generator().manual_seed(0)
    r = Augment(SIZE, randaugment=True).draw(7000, g, torch.device("cpu"))
    counts = torch.bincount(r["ra_op"].flatten(), minlength=len(ra.OPS))
    assert len(counts) == len(ra.OPS) and counts.min() > 800  # 14,000 draws: every operation about 1,000 times
    assert set(r["ra_sign"].unique().tolist()) == {-1.0, 1.0}
    assert not torch.equal(r["ra_op"][:, 0], r["ra_op"][:, 1])  # two operations each, drawn independently
    off = Augment(SIZE).draw(7000, torch.Generator().manual_seed(0), torch.device("cpu"))
    assert set(r) - set(off) == {"ra_op", "ra_sign"}
    assert all(torch.equal(r[k], off[k]) for k in off)  # off, an epoch's other draws are unchanged


def test_augment_applies_it_where_stock_does():
    from ultralytics.cfg import get_cfg

    assert Augment.from_args(get_cfg(overrides={"imgsz": SIZE})).randaugment  # Ultralytics' default policy
    for policy in (None, "augmix", "autoaugment"):
        assert not Augment.from_args(get_cfg(overrides={"imgsz": SIZE, "auto_augment": policy})).randaugment
    x = _images()[:, 0]
    still = dict(scale=0.0, fliplr=0.0, erasing=0.0)
    plain = (Augment(SIZE, **still)(x, torch.Generator().manual_seed(1)) * 255).round() / 255
    augmented = Augment(SIZE, randaugment=True, **still)(x, torch.Generator().manual_seed(1))
    changed = (augmented - plain).abs().flatten(1).amax(1) > 0
    assert changed.float().mean() >= 0.5  # most images: 2 of 14 operations, Identity and Color aside
    assert torch.equal(augmented, (augmented * 255).round() / 255)  # on the uint8 grid, as stock's ToTensor gives


def test_translation_is_torchvisions_at_every_size():
    for size in range(8, 513):
        space = RandAugment()._augmentation_space(31, (size, size))
        assert ra.translate_pixels(size) == int(space["TranslateX"][0][9]), size


def test_result_is_in_the_unit_range_on_the_uint8_grid():
    x = _images()
    op = torch.tensor([[ra.OPS.index("Rotate"), ra.OPS.index("Contrast")]] * len(x))
    out = ra.rand_augment(x.float() / 255, op, torch.ones(len(x), 2))
    assert out.dtype == torch.float32 and 0 <= out.min() and out.max() <= 1  # as it came in: [0, 1]
    ref = _stock(_stock(x, "Rotate", 1.0), "Contrast", 1.0)
    assert torch.equal((out * 255).round(), ref.float())  # compared as floats, not through a uint8 cast


@pytest.mark.parametrize("size", SIZES)
def test_cuda_gives_the_same_pixels(size):
    """On CUDA too (TF32 convolutions, another reduction order): every operation equals the CPU's, so stock's."""
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    x = _images(size=size)
    for i, name in enumerate(ra.OPS):
        for sign in (-1.0, 1.0):
            op, signs = torch.tensor([[i, 0]] * len(x)), torch.full((len(x), 2), sign)
            cpu = ra.rand_augment(x.float() / 255, op, signs)
            gpu = ra.rand_augment(x.float().cuda() / 255, op.cuda(), signs.cuda()).cpu()
            assert torch.equal(cpu, gpu), (name, sign)
