"""RandAugment on a batch: torchvision's `T.RandAugment()` (what Ultralytics' `auto_augment=randaugment` applies to
each image), as tensor operations over the whole batch with a policy drawn per image.

torchvision 0.29's defaults, which Ultralytics 8.4 keeps: 2 operations an image, each drawn uniformly from the 14
below, magnitude 9 of 31 bins, a random sign for the signed ones, fill 0 outside the image, bilinear interpolation.
Stock hands torchvision PIL images, so torchvision calls PIL; each operation here computes what PIL computes (its
sampling, float widths, rounding and truncation), so one image's result equals stock's pixel for pixel. torchvision's
tensor implementation is not that: it rounds interpolated pixels where PIL truncates (RandAugment's shears and
rotations came out +0.3 grey levels brighter on average) and blends in another order. On grey images `Color`
(saturation) does nothing, as in PIL.
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


def _bin(top: float) -> float:
    """Bin MAGNITUDE of torchvision's float32 `linspace(0, top, BINS)`: the magnitude torchvision hands PIL."""
    return float(torch.linspace(0.0, top, BINS)[MAGNITUDE])


SHEAR = _bin(0.3)  # 0.09 in float32 (0.0900000036, which PIL's shears see): the shear factor (tan of the angle)
ROTATE = _bin(30.0)  # 9 degrees
ENHANCE = _bin(0.9)  # 0.27 in float32: brightness, contrast and sharpness factors are 1 +- this
POSTERIZE_BITS = 8 - round(MAGNITUDE / ((BINS - 1) / 4))  # 7 bits kept
SOLARIZE = 255.0 * (1 - _AT)  # 178.5: values at or above it are inverted


def translate_pixels(size: int) -> int:
    """The shift of TranslateX/Y for a `size`-pixel side: 150/331 of it at bin 9, truncated as torchvision does."""
    return int(150.0 / 331.0 * size * _AT)  # Python floats: the same ints as torchvision's float32 (a test, 8-512 px)


def _pil_matrix(op: str, sign: float, size: int) -> list[float]:
    """PIL's output-to-input coefficients (a, b, c, d, e, f) for one geometric operation at bin 9: x_in = a x + b y + c,
    y_in = d x + e y + f at pixel centres. Shear (about the top-left corner) and translate as torchvision's `affine`
    passes them to PIL; rotate as PIL's own `Image.rotate` builds it (about the centre, cos and sin to 15 places)."""
    if op in ("ShearX", "ShearY"):
        s = math.radians(math.degrees(math.atan(sign * SHEAR)))  # torchvision's round trip through degrees
        if op == "ShearX":  # torchvision's inverse affine matrix at angle 0: tan for x, sin / cos for y
            return [1.0, math.tan(s), 0.0, 0.0, 1.0, 0.0]
        return [1.0, 0.0, 0.0, math.sin(s) / math.cos(s), 1.0, 0.0]
    if op in ("TranslateX", "TranslateY"):
        shift = -sign * translate_pixels(size)
        return [1.0, 0.0, shift, 0.0, 1.0, 0.0] if op == "TranslateX" else [1.0, 0.0, 0.0, 0.0, 1.0, shift]
    if op == "Rotate":
        r = -math.radians((sign * ROTATE) % 360.0)
        m = [round(math.cos(r), 15), round(math.sin(r), 15), 0.0, round(-math.sin(r), 15), round(math.cos(r), 15), 0.0]
        c = size / 2
        return [m[0], m[1], m[0] * -c + m[1] * -c + c, m[3], m[4], m[3] * -c + m[4] * -c + c]
    return [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]


@lru_cache(maxsize=8)
def _samples(size: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Where PIL's bilinear affine reads each output pixel, for every (operation, sign) (row op * 2 + (sign > 0);
    identity for the non-geometric ones), built once in float64 as PIL computes it, then kept on `device` (no
    host-to-device copy per batch): (28, 4, S*S) flat indices of the four neighbours, clamped to the edge as PIL clamps
    them; (28, 2, S*S) float64 weights dx, dy; (28, S*S) whether the sample point lies inside the image (else fill 0).
    """
    y, x = torch.meshgrid(
        torch.arange(size, dtype=torch.float64), torch.arange(size, dtype=torch.float64), indexing="ij"
    )
    x, y = x.flatten() + 0.5, y.flatten() + 0.5  # PIL samples at pixel centres
    index, weight, inside = [], [], []
    for op in OPS:
        for sign in (-1.0, 1.0):
            a, b, c, d, e, f = _pil_matrix(op, sign, size)
            xin, yin = a * x + b * y + c, d * x + e * y + f
            inside.append((xin >= 0) & (xin < size) & (yin >= 0) & (yin < size))
            x0, y0 = (xin - 0.5).floor(), (yin - 0.5).floor()
            weight.append(torch.stack([xin - 0.5 - x0, yin - 0.5 - y0]))
            cx0, cx1 = x0.clamp(0, size - 1).long(), (x0 + 1).clamp(0, size - 1).long()
            cy0, cy1 = y0.clamp(0, size - 1).long() * size, (y0 + 1).clamp(0, size - 1).long() * size
            index.append(torch.stack([cy0 + cx0, cy0 + cx1, cy1 + cx0, cy1 + cx1]))
    return torch.stack(index).to(device), torch.stack(weight).to(device), torch.stack(inside).to(device)


def _geometric(k: torch.Tensor, op: torch.Tensor, sign: torch.Tensor) -> torch.Tensor:
    """The geometric operations on (B, 1, S, S) values 0-255 as PIL computes them on stock's images: bilinear in
    float64, neighbours clamped at the edge, fill 0 where the sample point leaves the image, truncated to 8 bits.
    Identical to PIL's pixels; in float32, or rounded as torchvision's tensor path rounds, the shears and rotations
    part from them (float32: 0.13 % of pixels by one level; rounding: a third of them, +0.3 levels on average)."""
    b, size = len(k), k.shape[-1]
    index, weight, inside = _samples(size, k.device)
    row = op * 2 + (sign > 0).long()
    v = k.reshape(b, 1, -1).double().expand(b, 4, -1).gather(2, index[row])  # the four neighbours, (B, 4, S*S)
    dx, dy = weight[row].unbind(1)
    top, bottom = v[:, 0] + (v[:, 1] - v[:, 0]) * dx, v[:, 2] + (v[:, 3] - v[:, 2]) * dx
    out = torch.where(inside[row], top + (bottom - top) * dy, 0.0).floor()
    return out.float().view_as(k)


def _blend(img: torch.Tensor, other: torch.Tensor, ratio: torch.Tensor) -> torch.Tensor:
    """PIL's `Image.blend(other, img, ratio)` on 8-bit values: other + ratio * (img - other) in float32, clamped,
    truncated. (torchvision's tensor form, ratio * img + (1 - ratio) * other, lands a hair below whole values and
    truncates them one level down: 3-9 % of Contrast's pixels.)"""
    return (other + ratio * (img - other)).clamp(0, 255).trunc()


def _equalize(k: torch.Tensor) -> torch.Tensor:
    """PIL's equalize (torchvision's tensor one computes the same) on (B, 1, H, W) values 0-255, per image."""
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
    """PIL's `ImageEnhance.Sharpness`: blend with its SMOOTH filter of the interior (the border kept as it is).
    The integer kernel, then / 13: exact sums even where a GPU convolves in TF32 (weights of 1/13 would round)."""
    kernel = torch.ones(1, 1, 3, 3, device=k.device)
    kernel[0, 0, 1, 1] = 5.0
    smooth = (F.conv2d(k, kernel) / 13).round()  # sum / 13 is never a half, so PIL's round-half-up agrees
    degenerate = k.clone()
    degenerate[..., 1:-1, 1:-1] = smooth
    return _blend(k, degenerate, ratio)


def _pointwise(k: torch.Tensor, op: torch.Tensor, sign: torch.Tensor) -> torch.Tensor:
    """The non-geometric operations, each image taking its own (op, sign)."""
    b = len(k)
    factor = (1.0 + sign * ENHANCE).view(b, 1, 1, 1)
    lo, hi = k.amin((1, 2, 3), keepdim=True).double(), k.amax((1, 2, 3), keepdim=True).double()
    flat = hi == lo  # PIL leaves a flat image as it is
    # PIL's autocontrast table, in float64 as Python computes it; a true division (torch's 255.0 / t multiplies by
    # 1 / t, a hair off: 248 maps to 254, not 255)
    scale = torch.full_like(hi, 255.0) / (hi - lo).clamp(min=1)
    stretched = (k.double() * scale - lo * scale).trunc().clamp(0, 255).float()
    mean = (k.double().sum((1, 2, 3), keepdim=True) / k[0].numel() + 0.5).floor().float()  # PIL's, rounded
    results = {
        "Brightness": _blend(k, torch.zeros_like(k), factor),
        "Contrast": _blend(k, mean.expand_as(k), factor),
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
    k = (x * 255).round()
    for i in range(ops.shape[1]):
        op, sign = ops[:, i], signs[:, i]
        k = _pointwise(_geometric(k, op, sign), op, sign)
    return k / 255
