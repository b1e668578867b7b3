"""RandAugment on a batch: torchvision's `T.RandAugment()` (what Ultralytics' `auto_augment=randaugment` applies to
each image), as tensor operations over the whole batch with a policy drawn per image.

torchvision 0.29's defaults, which Ultralytics 8.4 keeps: 2 operations an image, each drawn uniformly from the 14
below, magnitude 9 of 31 bins, a random sign for the signed ones, fill 0 outside the image, bilinear interpolation.
Each operation follows torchvision's tensor implementation on uint8 images (values 0-255, rounded after
interpolation, truncated after blending), so one image's result equals `torchvision.transforms.functional` on it;
stock applies them to PIL images, which differ from that only in rounding. On grey images `Color` (saturation) does
nothing, as in torchvision.
"""

from __future__ import annotations

import math
from functools import lru_cache

import torch
import torch.nn.functional as F

OPS = ("Identity", "ShearX", "ShearY", "TranslateX", "TranslateY", "Rotate", "Brightness", "Color", "Contrast",
       "Sharpness", "Posterize", "Solarize", "AutoContrast", "Equalize")  # torchvision's order  # fmt: skip
NUM_OPS = 2  # operations applied to each image, one after the other
MAGNITUDE, BINS = 9, 31  # torchvision's defaults: the magnitude is bin 9 of each operation's 31-bin range
_AT = MAGNITUDE / (BINS - 1)  # where bin 9 sits in a linspace(0, top, 31)
SHEAR = 0.3 * _AT  # 0.09: the shear factor (tan of the angle)
ROTATE = 30.0 * _AT  # 9 degrees
ENHANCE = 0.9 * _AT  # 0.27: brightness, contrast and sharpness factors are 1 +- this
POSTERIZE_BITS = 8 - round(MAGNITUDE / ((BINS - 1) / 4))  # 7 bits kept
SOLARIZE = 255.0 * (1 - _AT)  # 178.5: values at or above it are inverted


def translate_pixels(size: int) -> int:
    """The shift of TranslateX/Y for a `size`-pixel side: 150/331 of it at bin 9, truncated as torchvision does."""
    return int(150.0 / 331.0 * size * _AT)


@lru_cache(maxsize=8)
def _thetas(size: int, device: torch.device) -> torch.Tensor:
    """(14, 2, 2, 3) on `device` (built once: no host-to-device copy per batch): each operation's affine_grid
    matrix for sign - and +; identity for the non-geometric ones.

    torchvision's inverse affine matrices (output to input pixel, about the image centre; shear about the top-left
    corner), with the translation column in affine_grid's units of half the side.
    """
    t = torch.eye(2, 3, dtype=torch.float64).repeat(len(OPS), 2, 1, 1)
    half = size / 2
    for s, sign in enumerate((-1.0, 1.0)):
        m = sign * SHEAR  # about the top-left corner: the centred shift is m * half pixels, i.e. m half-sides
        t[OPS.index("ShearX"), s, 0, 1:] = torch.tensor([m, m])  # x_in = x + m * y + m
        t[OPS.index("ShearY"), s, 1, ::2] = torch.tensor([m, m])  # y_in = m * x + y + m
        t[OPS.index("TranslateX"), s, 0, 2] = -sign * translate_pixels(size) / half
        t[OPS.index("TranslateY"), s, 1, 2] = -sign * translate_pixels(size) / half
        r = math.radians(-sign * ROTATE)  # torchvision rotates by -angle in image coordinates (y down)
        t[OPS.index("Rotate"), s, :, :2] = torch.tensor([[math.cos(r), math.sin(r)], [-math.sin(r), math.cos(r)]])
    return t.float().to(device)


def _blend(img: torch.Tensor, other: torch.Tensor, ratio: torch.Tensor) -> torch.Tensor:
    """torchvision's _blend on uint8 values: ratio * img + (1 - ratio) * other, clamped, truncated."""
    return (ratio * img + (1.0 - ratio) * other).clamp(0, 255).trunc()


def _equalize(k: torch.Tensor) -> torch.Tensor:
    """torchvision's equalize on (B, 1, H, W) integer values 0-255, each image by its own histogram."""
    b = len(k)
    flat = k.reshape(b, -1).long()
    hist = torch.zeros(b, 256, device=k.device).scatter_add_(1, flat, torch.ones_like(flat, dtype=torch.float32))
    last = hist.gather(1, flat.amax(1, keepdim=True))  # the count of the highest value present
    step = torch.div(hist.sum(1, keepdim=True) - last, 255, rounding_mode="floor")
    half_step = torch.div(step, 2, rounding_mode="floor")
    lut = torch.div(hist.cumsum(1) + half_step, step.clamp(min=1), rounding_mode="floor")
    lut = F.pad(lut, (1, 0))[:, :-1].clamp(0, 255)
    out = lut.gather(1, flat).view_as(k)
    return torch.where((step == 0).view(b, 1, 1, 1), k, out)


def _sharpness(k: torch.Tensor, ratio: torch.Tensor) -> torch.Tensor:
    """torchvision's adjust_sharpness: blend with a 3x3 smoothing of the interior (the border kept as it is)."""
    kernel = torch.ones(1, 1, 3, 3, device=k.device)
    kernel[0, 0, 1, 1] = 5.0
    smooth = F.conv2d(k, kernel / kernel.sum()).round()
    degenerate = k.clone()
    degenerate[..., 1:-1, 1:-1] = smooth
    return _blend(k, degenerate, ratio)


def _pointwise(k: torch.Tensor, op: torch.Tensor, sign: torch.Tensor) -> torch.Tensor:
    """The non-geometric operations, each image taking its own (op, sign)."""
    b = len(k)
    factor = (1.0 + sign * ENHANCE).view(b, 1, 1, 1)
    lo, hi = k.amin((1, 2, 3), keepdim=True), k.amax((1, 2, 3), keepdim=True)
    flat = hi == lo  # torchvision leaves a flat image as it is
    stretched = ((k - lo) * (255.0 / (hi - lo).clamp(min=1))).clamp(0, 255).trunc()
    results = {
        "Brightness": _blend(k, torch.zeros_like(k), factor),
        "Contrast": _blend(k, k.mean((1, 2, 3), keepdim=True), factor),
        "Sharpness": _sharpness(k, factor),
        "Posterize": k - k.remainder(2 ** (8 - POSTERIZE_BITS)),
        "Solarize": torch.where(k >= SOLARIZE, 255.0 - k, k),
        "AutoContrast": torch.where(flat, k, stretched),
        "Equalize": _equalize(k),
    }  # every operation on every image, then a select per image: no host sync (CUDA graphs)
    out = k
    for name, result in results.items():
        out = torch.where((op == OPS.index(name)).view(b, 1, 1, 1), result, out)
    return out


def rand_augment(x: torch.Tensor, ops: torch.Tensor, signs: torch.Tensor) -> torch.Tensor:
    """RandAugment on (B, 1, S, S) floats in [0, 1]: `ops` (B, NUM_OPS) indices into OPS, `signs` (B, NUM_OPS) of
    +-1, applied in order. Returns floats in [0, 1] on the 1/255 grid, as ToTensor gives after stock's uint8 ops."""
    b, size = len(x), x.shape[-1]
    k = (x * 255).round()
    thetas = _thetas(size, x.device)
    for i in range(ops.shape[1]):
        op, sign = ops[:, i], signs[:, i]
        theta = thetas[op, (sign > 0).long()]
        grid = F.affine_grid(theta, [b, 1, size, size], align_corners=False)
        k = F.grid_sample(k, grid, mode="bilinear", padding_mode="zeros", align_corners=False).round()
        k = _pointwise(k, op, sign)
    return k / 255
