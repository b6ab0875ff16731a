"""Paired twins with a secret coin (after Huang, Gong and Reiter, *A general framework for data-use auditing
of ML models*, CCS 2024): the marking side.

Every image selected for marking gets two marked versions, its *twins*. Both move the marker's features
along the key's carrier ``u`` of the image's class; they differ by a secret direction ``v`` of the feature
space, drawn per image, uniform among the unit vectors orthogonal to ``u`` (and inside the key's carrier
space): twin 0 is marked towards ``(u + a v) / sqrt(1 + a^2)``, twin 1 towards ``(u - a v) / sqrt(1 + a^2)``
(``a``: the spread), each with its own augmentation stream, with the same :class:`~radioactive.MarkConfig`
and so the same PSNR floor. A secret fair coin per image names the twin that is published.

Why this construction: measured on two sets of 64 Fashion-MNIST images with the shipped marker and the
settings then default (90 steps at lr 0.01, 40 dB), the spread 0.5 keeps 87-92 % of a plain mark's shift along the carrier
and gives twins 1.8-2.0 8-bit levels RMS apart (42-43.5 dB from each other) whose marker features are
0.70-0.80 apart. Two independent marking streams alone keep the whole shift but converge to nearly the same
image (pixel cosine of the two perturbations 0.87, 1.0 level RMS apart, features 0.18 apart); a mark followed
by a secret +/-2-level Rademacher pattern, re-projected onto the floor, gives 2.6 levels but features only
0.22 apart and loses 37 % of the shift (``benchmarks/bench_twins.py`` repeats the measurement).

The test needs no symmetry between the twins: under H0 the model is independent of the coins, so whichever
way the twins were made, the published twin scores better than its sibling with probability exactly 1/2,
independently across images (:mod:`radioactive.detect.twins`).

The secret (:class:`TwinSecret`: one random seed from which the directions, the streams and the coins
derive, and the coins themselves) is saved owner-only (mode 0600) like a key, never in the published
folder; only its fingerprint appears in outputs.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import secrets
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ._io import atomic_write, open_secret
from .errors import ConfigError, KeyFileError, KeyMismatchError, OutputExistsError
from .key import Key
from .mark import MarkConfig, MarkResult, choose_batch_size, image_seeds, mark

__all__ = ["DEFAULT_SPREAD", "TwinSecret", "mark_twin", "mark_twins", "twin_secret_for"]

FORMAT = 1
KIND = "radioactive.twins"
DEFAULT_SPREAD = 0.5


def _derived(seed: int, *parts: Any) -> int:
    """A 63-bit value derived from the secret seed and labels (sha256: unpredictable without the seed)."""
    return image_seeds(seed, ["\x00".join(str(part) for part in parts)])[0]


@dataclass(frozen=True, eq=False)
class TwinSecret:
    """The owner's secret of a twin marking: a random seed, the spread and the coin of every image.

    Attributes:
        key_fingerprint: the key the twins carry.
        seed: 63-bit secret; each image's direction, augmentation streams and coin derive from it and its id.
        coins: ``{image id: 0 or 1}``, the twin published for each image marked with twins.
        spread: ``a`` of the twin directions ``(u +/- a v) / sqrt(1 + a^2)``.
    """

    key_fingerprint: str
    seed: int
    coins: Mapping[str, int] = field(default_factory=dict)
    spread: float = DEFAULT_SPREAD

    def __post_init__(self) -> None:
        object.__setattr__(self, "coins", {str(k): int(v) for k, v in dict(self.coins).items()})
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or not 0 <= self.seed < 1 << 63:
            raise ConfigError(f"the twin secret's seed must be an integer in [0, 2^63), got {self.seed!r}")
        if not (isinstance(self.spread, int | float) and 0 < self.spread <= 4 and math.isfinite(self.spread)):
            raise ConfigError(f"spread must be in (0, 4], got {self.spread!r}")
        bad = [ident for ident, coin in self.coins.items() if coin not in (0, 1)]
        if bad:
            raise ConfigError(f"coins must be 0 or 1; image {bad[0]!r} has {self.coins[bad[0]]!r}")

    @classmethod
    def generate(cls, key: Key, ids: Sequence[str], *, spread: float = DEFAULT_SPREAD,
                 seed: int | None = None) -> TwinSecret:
        """A fresh secret for the images ``ids``: ``seed`` None draws it from the operating system (give one
        only for reproducible experiments; a guessable seed reveals the coins)."""
        seed = secrets.randbits(63) if seed is None else int(seed)
        coins = {str(ident): _derived(seed, "coin", ident) & 1 for ident in ids}
        return cls(key_fingerprint=key.fingerprint, seed=seed, coins=coins, spread=float(spread))

    # -- identity ------------------------------------------------------------------------------------
    def _content(self) -> dict[str, Any]:
        return {"format": FORMAT, "kind": KIND, "key_fingerprint": self.key_fingerprint, "seed": self.seed,
                "spread": self.spread, "coins": dict(sorted(self.coins.items()))}

    def _digest(self) -> str:
        return hashlib.sha256(json.dumps(self._content(), sort_keys=True).encode()).hexdigest()

    @property
    def fingerprint(self) -> str:
        """16 hex characters naming this secret (a hash over the seed and coins: reveals neither)."""
        return self._digest()[:16]

    def describe(self) -> dict[str, Any]:
        """What may appear in outputs: no seed, no coin."""
        return {"fingerprint": self.fingerprint, "key_fingerprint": self.key_fingerprint, "spread": self.spread,
                "pairs": len(self.coins)}

    def __repr__(self) -> str:
        return f"TwinSecret(fingerprint={self.fingerprint}, key={self.key_fingerprint}, pairs={len(self.coins)})"

    def check_key(self, key: Key) -> None:
        """Raise :class:`KeyMismatchError` unless this secret was made for ``key``."""
        if key.fingerprint != self.key_fingerprint:
            raise KeyMismatchError(f"the twin secret (fingerprint {self.fingerprint}) was made with key "
                                   f"{self.key_fingerprint}, not with this key ({key.fingerprint}); use the key the "
                                   "data was marked with, or the sidecar written by that marking run")

    # -- what derives from the seed -------------------------------------------------------------------
    def coin(self, ident: str) -> int:
        try:
            return self.coins[str(ident)]
        except KeyError:
            raise ConfigError(f"image {ident!r} was not marked with twins by this secret "
                              f"({self.fingerprint}); use the sidecar of the run that marked it") from None

    def stream_seeds(self, ids: Sequence[str], twins: Sequence[int]) -> list[int]:
        """The augmentation stream of twin ``twins[i]`` of image ``ids[i]``."""
        return [_derived(self.seed, "stream", int(twin), ident) for ident, twin in zip(ids, twins, strict=True)]

    def directions(self, key: Key, ids: Sequence[str], labels: torch.Tensor) -> torch.Tensor:
        """The secret direction ``v`` of each image ``(N, d)`` float64: a unit vector orthogonal to its carrier,
        uniform in the key's carrier space."""
        carriers = key.carriers[torch.as_tensor(labels, dtype=torch.long)]  # (N, d)
        out = torch.empty_like(carriers)
        for row, ident in enumerate(ids):
            generator = torch.Generator().manual_seed(_derived(self.seed, "direction", ident))
            if key.basis is None:
                gauss = torch.randn(key.feature_dim, generator=generator, dtype=torch.float64)
            else:
                gauss = torch.randn(key.basis.shape[1], generator=generator, dtype=torch.float64) @ key.basis.T
            gauss = gauss - (gauss @ carriers[row]) * carriers[row]
            out[row] = gauss / gauss.norm().clamp_min(1e-12)
        return out

    def twin_carriers(self, key: Key, ids: Sequence[str], labels: torch.Tensor, twins: Sequence[int]) -> torch.Tensor:
        """``(u +/- a v) / sqrt(1 + a^2)`` ``(N, d)`` float64: the direction twin ``twins[i]`` is marked towards."""
        carriers = key.carriers[torch.as_tensor(labels, dtype=torch.long)]
        sign = 1.0 - 2.0 * torch.as_tensor(list(twins), dtype=torch.float64).view(-1, 1)  # twin 0: +, twin 1: -
        return (carriers + sign * self.spread * self.directions(key, ids, labels)) / math.sqrt(1 + self.spread**2)

    # -- files ---------------------------------------------------------------------------------------
    def save(self, path: str | os.PathLike) -> Path:
        """Write the secret as JSON (mode 0600, atomically). Refuses to overwrite an existing file."""
        path = Path(path)
        if path.exists():
            raise OutputExistsError(f"twin secret {str(path)!r} already exists; sidecars are never overwritten (its "
                                    "coins are the only record of which twins were published): choose another path")
        with atomic_write(path, mode=0o600) as tmp:
            tmp.write_text(json.dumps({**self._content(), "sha256": self._digest()}, indent=1) + "\n")
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> TwinSecret:
        """Read a sidecar, verify its integrity, and warn if other users can read it."""
        path = open_secret(path, "twin secret", "give the sidecar written by 'radioactive mark --twins' "
                           "(next to the key, or its --twins-secret path)")
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            if data.get("kind") != KIND or data.get("format") != FORMAT:
                raise ValueError("not a twin secret")
            secret = cls(key_fingerprint=str(data["key_fingerprint"]), seed=data["seed"], coins=data["coins"],
                         spread=data["spread"])
            recorded = data["sha256"]
        except Exception as exc:
            raise KeyFileError(f"twin secret {str(path)!r} is unreadable or malformed ({type(exc).__name__}); give "
                               "the sidecar written by 'radioactive mark --twins' (or a backup of it)") from None
        if secret._digest() != recorded:
            raise KeyFileError(f"twin secret {str(path)!r} fails its integrity check (the content does not match its "
                               "recorded hash): it was modified or corrupted")
        return secret

    # -- marking -------------------------------------------------------------------------------------
    def mark_published(self, marker: Any, images: torch.Tensor, labels: torch.Tensor, key: Key,
                       config: MarkConfig | None, *, ids: Sequence[str], batch_size: int | None = None,
                       classes: Sequence[str] | None = None) -> MarkResult:
        """The twin each image's coin names (what :func:`radioactive.publish.mark_dataset` publishes)."""
        return mark_twin(marker, images, labels, key, self, ids=ids, twin=[self.coin(i) for i in ids],
                         config=config, batch_size=batch_size, classes=classes)


def mark_twin(marker: Any, images: torch.Tensor, labels: torch.Tensor | Sequence[int], key: Key, secret: TwinSecret,
              *, ids: Sequence[str], twin: int | Sequence[int], config: MarkConfig | None = None,
              batch_size: int | None = None, progress: Callable[[int], None] | None = None,
              classes: Sequence[str] | None = None) -> MarkResult:
    """One twin of each image: :func:`radioactive.mark` towards the twin's direction, in the twin's stream.

    Args:
        marker, images, config, batch_size, progress, classes: as for :func:`radioactive.mark`.
        labels: ``(N,)`` classes in ``[0, C)``.
        key: the key (checked against the marker and the secret).
        secret: the :class:`TwinSecret`.
        ids: each image's id (the one the secret's coins and streams are keyed by).
        twin: 0 or 1 for every image, or one per image.

    Returns:
        :class:`radioactive.MarkResult`; its ``shift`` and ``cosine`` are measured along the twin's direction.
    """
    key.check_marker(marker.info)
    secret.check_key(key)
    labels = torch.as_tensor(labels, dtype=torch.long).reshape(-1).cpu()
    ids = [str(i) for i in ids]
    count = len(ids)
    twins = [int(twin)] * count if isinstance(twin, int) else [int(t) for t in twin]
    if labels.shape[0] != count or len(twins) != count or images.shape[0] != count:
        raise ConfigError(f"{images.shape[0]} images, {labels.shape[0]} labels, {count} ids and {len(twins)} twin "
                          "indices; give one of each per image")
    if any(t not in (0, 1) for t in twins):
        raise ConfigError("twin indices must be 0 or 1")
    if count and (int(labels.min()) < 0 or int(labels.max()) >= key.num_classes):
        raise ConfigError(f"labels must lie in [0, {key.num_classes})")
    config = config or MarkConfig()
    chunk = batch_size or choose_batch_size(marker, images.shape[1:], config)
    classes = key.num_classes
    parts = []
    for start in range(0, count, chunk):
        end = min(count, start + chunk)
        size = end - start
        # Each image gets its own block of C carriers whose row of its class is the twin's direction, so that
        # label % C is still its class (what MarkConfig.lambda_class reads).
        block = key.carriers.repeat(size, 1)  # (size * C, d)
        rows = torch.arange(size) * classes + labels[start:end]
        block[rows] = secret.twin_carriers(key, ids[start:end], labels[start:end], twins[start:end])
        parts.append(mark(marker, images[start:end], rows, block, config,
                          seed=secret.stream_seeds(ids[start:end], twins[start:end]), batch_size=size,
                          progress=progress, classes=classes))
    if not parts:
        return mark(marker, images, labels, key, config, seed=[])
    return MarkResult(images=torch.cat([p.images for p in parts]), psnr=torch.cat([p.psnr for p in parts]),
                      shift=torch.cat([p.shift for p in parts]), cosine=torch.cat([p.cosine for p in parts]))


def mark_twins(marker: Any, images: torch.Tensor, labels: torch.Tensor | Sequence[int], key: Key, secret: TwinSecret,
               *, ids: Sequence[str], config: MarkConfig | None = None,
               batch_size: int | None = None) -> tuple[MarkResult, MarkResult]:
    """Both twins of each image, ``(twin 0, twin 1)``; the published one is ``secret.coin(id)``.

    Each twin is made in batches of its own (the coins play no part), so the pair is the same whatever was
    published. See :func:`mark_twin` for the arguments.

    Examples:
        >>> import torch
        >>> from radioactive import Key, Marker
        >>> from radioactive.nets import NetSpec, build_from_spec
        >>> spec = NetSpec("cnn", 4, input_size=(16, 16), kwargs={"width": 4, "feature_dim": 8})
        >>> marker = Marker.from_model(build_from_spec(spec), spec)
        >>> key = Key.generate(marker.info, seed=0)
        >>> secret = TwinSecret.generate(key, ["a", "b"], seed=1)
        >>> first, second = mark_twins(marker, torch.rand(2, 1, 16, 16), [0, 3], key, secret, ids=["a", "b"],
        ...                            config=MarkConfig(steps=3))
        >>> bool((first.psnr >= 40).all() and (second.psnr >= 40).all())
        True
    """
    return tuple(mark_twin(marker, images, labels, key, secret, ids=ids, twin=t, config=config,  # type: ignore[return-value]
                           batch_size=batch_size) for t in (0, 1))


def twin_secret_for(source: Any, key: Key, *, fraction: float, classes: Sequence[int] | None = None, seed: int = 0,
                    spread: float = DEFAULT_SPREAD, secret_seed: int | None = None) -> TwinSecret:
    """A fresh secret whose coins cover exactly the images :func:`radioactive.publish.mark_dataset` selects
    with the same ``fraction``, ``classes`` and ``seed``; pass it as ``mark_dataset(..., twins=secret)``
    after saving it (:meth:`TwinSecret.save`)."""
    from .publish import select_marked

    classes = sorted(set(range(len(source.classes))) if classes is None else set(classes))
    return TwinSecret.generate(key, sorted(select_marked(source, fraction, classes, seed)), spread=spread,
                               seed=secret_seed)
