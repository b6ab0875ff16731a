"""The data-taggant test: secret key images with secret uniform labels, read as ranks (exact under H0).

After Bouaziz, Usunier and El Mhamdi, *Data Taggants: Dataset Ownership Verification via Harmless Targeted
Data Poisoning* (ICLR 2025). The owner draws ``n`` key images (out of distribution: seeded smooth random
patterns, :func:`taggant_keys`) and gives each a secret label drawn uniformly from the ``C`` classes, never
published; the published images are marked so that a model trained on them leans towards the key labels.
The auditor sends the ``n`` key images to the suspect (one query each) and reads, for each, the rank of its
secret label among the suspect's ``C`` scores (1 = top).

Why it is exact: under H0 the suspect never saw the marks, so it is independent of the secret labels. Whatever
the suspect prefers on the key images, each label is then uniform on the classes and the labels are
independent, so the ranks are i.i.d. uniform on ``{1..C}``. Two combinations with exact laws:

- **sum of ranks** (small = evidence): ``S - n`` is a sum of ``n`` uniforms on ``{0..C-1}``, whose count of
  ways to reach at most ``m`` is ``sum_j (-1)^j binom(n, j) binom(m - jC + n, n)`` (inclusion-exclusion on the
  convolution of the uniforms). It is evaluated in exact integer arithmetic and turned into a log only at the
  end, so p-values far below 1e-300 are exact (:func:`rank_sum_log10_p`);
- **top-k hits**: the number of keys whose label is among the suspect's top ``k`` is Binomial(n, k/C)
  (:func:`top_k_log10_p`).

Ties between the secret label's score and another class's (label-only outputs, saturated probabilities) are
broken either ``conservative``-ly (every tied class counts as ranked above the label: ranks can only grow, so
the p-values stay valid, at a loss of power when ties are common) or at ``random`` by public randomness drawn
from ``seed`` (then the ranks are exactly uniform again). The tie seed must not be derived from the key's seed:
the test is exact only when the tie draws are independent of the secret labels.

Key images are never reused across audits whose results are combined as independent, and the labels are
drawn without any look at a model.

Examples:
    >>> import numpy as np
    >>> keys = taggant_keys(100, 10, seed=3)
    >>> scores = np.eye(10)[keys.labels.numpy()] * 5.0   # a suspect that always puts the secret label on top
    >>> verdict = taggant_test(scores, keys.labels)
    >>> verdict.num_queries, round(verdict.log10_p_rank_sum), round(verdict.log10_p_top_k)
    (100, -100, -100)
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import ConfigError
from ..stats import binomial_log_sf

__all__ = [
    "TIE_RULES",
    "TaggantKeys",
    "TaggantVerdict",
    "rank_sum_log10_p",
    "secret_label_ranks",
    "taggant_keys",
    "taggant_test",
    "top_k_log10_p",
]

TIE_RULES = ("conservative", "random")
_LN10 = math.log(10.0)


@dataclass(frozen=True)
class TaggantKeys:
    """Secret key images and their secret labels.

    Attributes:
        images: ``(n, c, H, W)`` float32 in [0, 1], on the 8-bit grid (sendable as 8-bit files).
        labels: ``(n,)`` int64, uniform on ``0..num_classes - 1``.
        num_classes: C.
        seed: the seed that drew them (a fresh one per audit).
        sigma: blur of the patterns, in pixels.
    """

    images: torch.Tensor
    labels: torch.Tensor
    num_classes: int
    seed: int
    sigma: float

    def __post_init__(self) -> None:
        if self.images.dim() != 4 or self.labels.shape != (self.images.shape[0],):
            raise ConfigError(f"images must be (n, c, H, W) and labels (n,), got {tuple(self.images.shape)} and "
                              f"{tuple(self.labels.shape)}")

    def to_dict(self) -> dict[str, Any]:
        """The recipe of the keys (not the secret itself): count, shape, classes, seed, blur."""
        return {"num_keys": int(self.labels.numel()), "shape": list(self.images.shape[1:]),
                "num_classes": self.num_classes, "seed": self.seed, "sigma": self.sigma}


def _gaussian_blur(noise: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur with reflected borders. ``(n, c, H, W)`` float64."""
    radius = max(1, int(math.ceil(3 * sigma)))
    radius = min(radius, noise.shape[-1] - 1, noise.shape[-2] - 1)
    offsets = torch.arange(-radius, radius + 1, dtype=torch.float64)
    kernel = torch.exp(-0.5 * (offsets / sigma) ** 2)
    kernel = kernel / kernel.sum()
    channels = noise.shape[1]
    padded = F.pad(noise, (radius, radius, radius, radius), mode="reflect")
    rows = F.conv2d(padded, kernel.view(1, 1, 1, -1).expand(channels, 1, 1, -1), groups=channels)
    return F.conv2d(rows, kernel.view(1, 1, -1, 1).expand(channels, 1, -1, 1), groups=channels)


def taggant_keys(num_keys: int, num_classes: int, *, seed: int, shape: tuple[int, int, int] = (1, 28, 28),
                 sigma: float = 2.0) -> TaggantKeys:
    """Seeded out-of-distribution key images (blurred Gaussian noise, stretched to [0, 1] per image) and secret
    labels uniform on the classes, drawn on CPU in float64 (a seed gives the same keys anywhere).

    Args:
        num_keys: n, the number of key images (= queries of the test).
        num_classes: C.
        seed: a fresh seed per audit; never reuse keys across audits combined as independent.
        shape: ``(c, H, W)`` of one image.
        sigma: Gaussian blur in pixels (larger: smoother patterns).

    Raises:
        ConfigError: a count, shape or blur out of range.
    """
    if num_keys < 1 or num_classes < 2:
        raise ConfigError(f"need num_keys >= 1 and num_classes >= 2, got {num_keys} and {num_classes}")
    if len(shape) != 3 or min(shape) < 1 or min(shape[1:]) < 2:
        raise ConfigError(f"shape must be (c, H, W) with H, W >= 2, got {shape}")
    if not sigma > 0:
        raise ConfigError(f"sigma must be > 0 pixels, got {sigma}")
    gen = torch.Generator().manual_seed(int(seed))
    noise = torch.randn((num_keys, *shape), generator=gen, dtype=torch.float64)
    labels = torch.randint(num_classes, (num_keys,), generator=gen, dtype=torch.int64)
    smooth = _gaussian_blur(noise, sigma)
    flat = smooth.flatten(1)
    low, high = flat.min(dim=1).values, flat.max(dim=1).values
    stretched = (flat - low[:, None]) / (high - low).clamp_min(1e-12)[:, None]
    images = (stretched * 255).round().div(255).view_as(smooth).float()
    return TaggantKeys(images, labels, int(num_classes), int(seed), float(sigma))


def _as_array(values: Any) -> np.ndarray:
    if isinstance(values, torch.Tensor):
        values = values.detach().cpu().to(torch.float64 if values.is_floating_point() else torch.int64).numpy()
    return np.asarray(values)


def secret_label_ranks(scores: Any, labels: Any, *, ties: str = "conservative", seed: int | None = None) -> np.ndarray:
    """Rank of each key's secret label among the suspect's scores (1 = highest score).

    Args:
        scores: ``(n, C)`` logits, probabilities or any per-class score (only the order matters).
        labels: ``(n,)`` secret labels in ``0..C-1``.
        ties: ``conservative`` (tied classes count as ranked above the label) or ``random`` (a uniform
            position among the tied classes, drawn from ``seed``).
        seed: the tie-breaking seed (``ties="random"`` only); independent of the key's seed.

    Returns:
        ``(n,)`` int64 ranks in ``1..C``.

    Raises:
        ConfigError: shapes, label range, non-finite scores, unknown ``ties`` or a missing seed.
    """
    if ties not in TIE_RULES:
        raise ConfigError(f"unknown ties rule {ties!r}; choose from {list(TIE_RULES)}")
    scores_array, labels_array = _as_array(scores), _as_array(labels)
    if scores_array.ndim != 2 or scores_array.shape[1] < 2:
        raise ConfigError(f"scores must be (num_keys, num_classes) with num_classes >= 2, got shape "
                          f"{scores_array.shape}")
    if labels_array.shape != (scores_array.shape[0],):
        raise ConfigError(f"labels must be (num_keys,) = ({scores_array.shape[0]},) to match scores, got shape "
                          f"{labels_array.shape}")
    if labels_array.size and not np.issubdtype(labels_array.dtype, np.integer):
        raise ConfigError(f"labels must be integers, got dtype {labels_array.dtype}")
    num_classes = scores_array.shape[1]
    if labels_array.size and (labels_array.min() < 0 or labels_array.max() >= num_classes):
        raise ConfigError(f"labels must lie in 0..{num_classes - 1} (the scores' classes), got "
                          f"{int(labels_array.min())}..{int(labels_array.max())}")
    scores_array = scores_array.astype(np.float64)
    if not np.all(np.isfinite(scores_array)):
        raise ConfigError("scores must be finite (got NaN or inf); check the suspect's outputs")
    labels_array = labels_array.astype(np.int64)
    own = scores_array[np.arange(len(labels_array)), labels_array][:, None]  # (n, 1)
    above = (scores_array > own).sum(axis=1)
    tied = (scores_array == own).sum(axis=1) - 1  # other classes with exactly the label's score
    if ties == "conservative":
        return (1 + above + tied).astype(np.int64)
    if seed is None:
        raise ConfigError("ties='random' needs a seed (public randomness independent of the key's seed)")
    position = np.floor(np.random.default_rng(seed).random(len(labels_array)) * (tied + 1)).astype(np.int64)
    return (1 + above + position).astype(np.int64)


def _check_ranks(ranks: Any, num_classes: int) -> np.ndarray:
    ranks_array = _as_array(ranks)
    if num_classes < 2:
        raise ConfigError(f"num_classes must be >= 2, got {num_classes}")
    if ranks_array.ndim != 1 or ranks_array.size == 0:
        raise ConfigError(f"ranks must be a non-empty (num_keys,) vector, got shape {ranks_array.shape}")
    if not np.issubdtype(ranks_array.dtype, np.integer) or ranks_array.min() < 1 or ranks_array.max() > num_classes:
        raise ConfigError(f"ranks must be integers in 1..{num_classes}, got {ranks_array.min()}..{ranks_array.max()}")
    return ranks_array.astype(np.int64)


def _count_at_most(total: int, count: int, num_classes: int) -> int:
    """Number of vectors in ``{0..C-1}^count`` whose sum is at most ``total`` (exact integer)."""
    if total < 0:
        return 0
    top = count * (num_classes - 1)
    if total >= top:
        return num_classes**count
    if total > top // 2:  # the law is symmetric: count the complement, fewer terms
        return num_classes**count - _count_at_most(top - total - 1, count, num_classes)
    # binom(count, j) and binom(total - j C + count, count), updated term to term by exact integer ratios
    choose_j, choose_sum = 1, math.comb(total + count, count)
    ways = 0
    last = min(count, total // num_classes)
    for j in range(last + 1):
        ways += -choose_j * choose_sum if j % 2 else choose_j * choose_sum
        if j == last:
            break
        top_j = total - j * num_classes + count
        numerator = math.prod(range(top_j - count - num_classes + 1, top_j - count + 1))
        choose_sum = choose_sum * numerator // math.prod(range(top_j - num_classes + 1, top_j + 1))
        choose_j = choose_j * (count - j) // (j + 1)
    return ways


def rank_sum_log10_p(ranks: Any, num_classes: int) -> float:
    """Exact log10 P(S <= s) for the sum ``s`` of the ranks, ``S`` a sum of ``n`` i.i.d. uniforms on ``1..C``.

    Exact integer arithmetic (cost grows with ``n``: milliseconds at n = 1,000, about a second at n = 10,000).

    Raises:
        ConfigError: ranks empty or outside ``1..C``.
    """
    ranks_array = _check_ranks(ranks, num_classes)
    count = len(ranks_array)
    ways = _count_at_most(int(ranks_array.sum()) - count, count, int(num_classes))
    return (math.log(ways) - count * math.log(num_classes)) / _LN10


def top_k_log10_p(ranks: Any, num_classes: int, k: int = 1) -> float:
    """Exact log10 P(X >= x) for the number ``x`` of ranks at most ``k``, ``X ~ Binomial(n, k / C)``.

    Raises:
        ConfigError: ranks outside ``1..C`` or ``k`` not in ``1..C-1``.
    """
    ranks_array = _check_ranks(ranks, num_classes)
    if not 1 <= k < num_classes:
        raise ConfigError(f"k must lie in 1..{num_classes - 1}, got {k}")
    hits = int((ranks_array <= k).sum())
    return binomial_log_sf(hits, len(ranks_array), k / num_classes) / _LN10


@dataclass(frozen=True)
class TaggantVerdict:
    """The taggant test on one suspect.

    Attributes:
        log10_p_rank_sum: exact log10 p of the sum of ranks.
        log10_p_top_k: exact log10 p of the count of top-``k`` hits.
        num_queries: queries sent to the suspect (one per key image).
        num_classes: C.
        k: the top-k level.
        top_k_hits: keys whose secret label is in the suspect's top ``k``.
        mean_rank: mean rank of the secret labels ((C + 1) / 2 expected under H0).
        ties: the tie rule.
    """

    log10_p_rank_sum: float
    log10_p_top_k: float
    num_queries: int
    num_classes: int
    k: int
    top_k_hits: int
    mean_rank: float
    ties: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def taggant_test(scores: Any, labels: Any, *, k: int = 1, ties: str = "conservative",
                 seed: int | None = None) -> TaggantVerdict:
    """Both exact combinations on one suspect's scores on the key images.

    Args:
        scores: ``(n, C)`` the suspect's scores on the ``n`` key images (logits or probabilities).
        labels: ``(n,)`` the secret labels.
        k: top-k level of the binomial count.
        ties, seed: see :func:`secret_label_ranks`.

    Raises:
        ConfigError: see :func:`secret_label_ranks` and :func:`top_k_log10_p`.
    """
    ranks = secret_label_ranks(scores, labels, ties=ties, seed=seed)
    num_classes = _as_array(scores).shape[1]
    return TaggantVerdict(
        log10_p_rank_sum=rank_sum_log10_p(ranks, num_classes), log10_p_top_k=top_k_log10_p(ranks, num_classes, k),
        num_queries=len(ranks), num_classes=int(num_classes), k=int(k), top_k_hits=int((ranks <= k).sum()),
        mean_rank=float(ranks.mean()), ties=ties)
