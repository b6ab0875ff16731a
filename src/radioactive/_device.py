"""How the marking loop runs on a device (private to :mod:`radioactive.mark`): the marking network's
arithmetic (fp32, TF32, bf16 autocast), the augmentations of every step prepared as device tensors before
the loop (no host synchronisation inside it), and the memory one step takes (for the batch size).

Nothing here picks a device: everything follows the marker's.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F

from .augment import AUGMENTATIONS, Augmentation, _crop_boxes, resize_to

PRECISIONS = ("fp32", "tf32", "bf16")

# A step's augmentation: (images (B, c, H, W), step index) -> (B, c, *input_size).
StepAugment = Callable[[torch.Tensor, int], torch.Tensor]


def _tf32_switches() -> list[tuple[Any, str, Any, Any]]:
    """(object, attribute, on, off) for TF32 in CUDA matmuls and cuDNN convolutions: the per-backend
    ``fp32_precision`` of torch >= 2.9 where it exists (mixing it with the legacy flags is an error there),
    else the legacy ``allow_tf32`` flags."""
    conv = getattr(torch.backends.cudnn, "conv", None)
    matmul = torch.backends.cuda.matmul
    if hasattr(matmul, "fp32_precision") and hasattr(conv, "fp32_precision"):
        return [(matmul, "fp32_precision", "tf32", "ieee"), (conv, "fp32_precision", "tf32", "ieee")]
    return [(matmul, "allow_tf32", True, False), (torch.backends.cudnn, "allow_tf32", True, False)]


@contextlib.contextmanager
def network_precision(precision: str, device: torch.device):
    """The arithmetic of CUDA matmuls and convolutions for the duration, restored afterwards: TF32 for
    ``"tf32"``, IEEE fp32 otherwise (so ``"fp32"`` means fp32, not cuDNN's TF32 default; ``"bf16"`` runs the
    network under autocast, see :func:`optimise`). Other devices have no TF32 mode: nothing changes there.

    The switches are process-wide: other threads using CUDA meanwhile see them too.
    """
    if device.type != "cuda":
        yield
        return
    switches = _tf32_switches()
    saved = [getattr(obj, name) for obj, name, _, _ in switches]
    try:
        for obj, name, on, off in switches:
            setattr(obj, name, on if precision == "tf32" else off)
        yield
    finally:
        for (obj, name, _, _), value in zip(switches, saved):
            setattr(obj, name, value)


def autocast_for(precision: str, device: torch.device):
    """Autocast to bfloat16 for ``"bf16"``, else nothing (wraps the marking network's forward only)."""
    if precision == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def step_augmentations(augmentation: Augmentation, uniforms: torch.Tensor, image_size: tuple[int, int],
                       device: torch.device, *, prepared: bool | None = None) -> StepAugment:
    """The augmentation of each step from its uniforms ``(steps, B, k)`` (CPU, float64).

    ``prepared`` (default: on any device but the CPU) computes every step's crop and flip parameters before
    the loop and moves them to ``device`` in one copy; a step then samples with ``grid_sample`` from an
    affine grid built by broadcasting (no matmul, so TF32 cannot touch the crop coordinates) and never waits
    for the device. The same maths as the kornia crop, up to float rounding. On CPU the default is the
    kornia path, step by step, as marking has always run (same bytes). ``jpeg``, ``blur`` and ``resize``
    run their kornia ops in both cases (they may synchronise on an accelerator).
    """
    if not (device.type != "cpu" if prepared is None else prepared):
        return lambda x, step: augmentation(x, uniforms[step])
    steps, count = uniforms.shape[:2]
    height, width = image_size
    ops: list[Callable[[torch.Tensor, int], torch.Tensor]] = []
    column, sized = 0, False
    names = augmentation.names
    for index, name in enumerate(names):
        take = AUGMENTATIONS[name][0]
        u = uniforms[:, :, column:column + take]
        column += take
        if name == "crop":
            folded = index + 1 < len(names) and names[index + 1] == "flip"
            boxes = _crop_boxes(u.reshape(-1, take), height, width, augmentation.params, folded).double()
            ops.append(_sampler(boxes.view(steps, count, 4, 2), (height, width), augmentation.output_size, device))
            height, width = augmentation.output_size
            sized = True
        elif name == "flip" and index > 0 and names[index - 1] == "crop":
            continue
        elif name == "flip":
            mirrored = (u[..., 0] < 0.5).to(device).view(steps, count, 1, 1, 1)
            ops.append(lambda x, step, m=mirrored: torch.where(m[step], x.flip(-1), x))
        else:
            op = AUGMENTATIONS[name][1]
            on_device = u if name == "resize" else u.to(device)  # resize reads one factor on the host
            ops.append(lambda x, step, op=op, v=on_device: op(x, v[step], augmentation.params))

    def apply(x: torch.Tensor, step: int) -> torch.Tensor:
        for op in ops:
            x = op(x, step)
        return x if sized else resize_to(x, augmentation.output_size)

    return apply


def _sampler(boxes: torch.Tensor, size: tuple[int, int], out_size: tuple[int, int],
             device: torch.device) -> Callable[[torch.Tensor, int], torch.Tensor]:
    """Bilinear crops ``(B, c, *out_size)`` of the corner boxes ``(steps, B, 4, 2)`` (kornia's layout, pixel
    coordinates, corners sampled exactly: align_corners)."""
    height, width = size
    left, right = boxes[..., 0, 0], boxes[..., 1, 0]
    top, bottom = boxes[..., 0, 1], boxes[..., 2, 1]
    # normalised source coordinate = offset + scale * normalised output coordinate
    coeffs = torch.stack([(left + right) / max(width - 1, 1) - 1, (right - left) / max(width - 1, 1),
                          (top + bottom) / max(height - 1, 1) - 1, (bottom - top) / max(height - 1, 1)], -1)
    coeffs = coeffs.to(device, torch.float32)  # (steps, B, 4)
    out_h, out_w = out_size
    gx = torch.linspace(-1, 1, out_w, device=device).view(1, 1, out_w) if out_w > 1 else torch.zeros(1, 1, 1, device=device)
    gy = torch.linspace(-1, 1, out_h, device=device).view(1, out_h, 1) if out_h > 1 else torch.zeros(1, 1, 1, device=device)

    def sample(x: torch.Tensor, step: int) -> torch.Tensor:
        c = coeffs[step].to(x.dtype).view(-1, 4, 1, 1)
        grid_x = (c[:, 0] + c[:, 1] * gx.to(x.dtype)).expand(-1, out_h, out_w)
        grid_y = (c[:, 2] + c[:, 3] * gy.to(x.dtype)).expand(-1, out_h, out_w)
        grid = torch.stack([grid_x, grid_y], -1)  # (B, out_h, out_w, 2)
        return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=True)

    return sample


def step_memory(features: Callable[[torch.Tensor], torch.Tensor], augmentation: Augmentation,
                shape: tuple[int, ...], precision: str, device: torch.device) -> tuple[float, float]:
    """(bytes per image, fixed bytes) of one marking step on CUDA for images of ``shape`` ``(c, H, W)``,
    from probe steps on 4 and 12 random images: the difference is the per-image cost (the whole peak per
    image where workspace choices make the difference meaningless). Resets the device's peak-memory
    statistics."""
    counts, peaks = (4, 12), []
    for count in counts:
        torch.cuda.synchronize(device)
        base = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        x0 = torch.rand(count, *shape, device=device)
        delta = torch.zeros_like(x0, requires_grad=True)
        uniforms = torch.rand(1, count, augmentation.num_uniforms, dtype=torch.float64)
        view = step_augmentations(augmentation, uniforms, tuple(shape[-2:]), device)(x0 + delta, 0)
        with network_precision(precision, device):
            with autocast_for(precision, device):
                feats = features(view)
            torch.autograd.grad(feats.float().sum(), delta)
        torch.cuda.synchronize(device)
        peaks.append(torch.cuda.max_memory_allocated(device) - base)
        del x0, delta, view, feats
    slope = (peaks[1] - peaks[0]) / (counts[1] - counts[0])
    if slope < 0.25 * peaks[1] / counts[1]:
        slope = peaks[1] / counts[1]
    fixed = max(peaks[0] - counts[0] * slope, 0.0)
    # What a batch holds besides the step: the image, its 8-bit copy, delta, Adam's two moments, the
    # gradient and the marked copy (float32 each).
    return slope + 7 * 4 * float(torch.Size(shape).numel()), fixed


def batch_for_memory(per_image: float, fixed: float, device: torch.device, cap: int = 1024) -> int:
    """Images whose steps fit in 80 % of ``device``'s free memory (what the driver reports free plus what
    PyTorch's cache holds unused), between 1 and ``cap``."""
    free, _ = torch.cuda.mem_get_info(device)
    free += torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
    return int(max(1, min(cap, (0.8 * free - fixed) // per_image)))
