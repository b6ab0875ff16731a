"""The secret key: one random unit carrier per class in the marking network's feature space.

A key file is a safetensors file (``carriers`` float64 ``(C, d)``, optionally ``basis`` ``(d, r)``) whose
header holds the metadata as JSON: the marking network's spec and weight hash, the seed and the carrier
space. It is written with mode 0600. The fingerprint (a sha256 over carriers and metadata) names the key in
every result; the carriers and the seed never leave the key file.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ._io import atomic_write, open_secret
from .errors import ConfigError, KeyFileError, KeyMismatchError, OutputExistsError
from .nets import NetSpec

__all__ = ["Key", "MarkerInfo", "random_carriers", "random_key"]

FORMAT_VERSION = 1
CARRIER_SPACES = ("full", "neutral")


@dataclass(frozen=True)
class MarkerInfo:
    """Identity of the marking network a key belongs to: its spec, weight hash, feature dim and head name."""

    spec: NetSpec
    weights_sha256: str
    feature_dim: int
    head: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "spec": self.spec.to_dict(),
            "weights_sha256": self.weights_sha256,
            "feature_dim": self.feature_dim,
            "head": self.head,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> MarkerInfo:
        return cls(
            spec=NetSpec.from_dict(data["spec"]),
            weights_sha256=str(data["weights_sha256"]),
            feature_dim=int(data["feature_dim"]),
            head=str(data.get("head", "")),
        )


def random_carriers(
    num_classes: int, feature_dim: int, generator: torch.Generator, basis: torch.Tensor | None = None
) -> torch.Tensor:
    """``(C, d)`` float64 unit vectors, uniform on the sphere of R^d or of the span of ``basis`` ``(d, r)``."""
    if basis is None:
        gauss = torch.randn(num_classes, feature_dim, generator=generator, dtype=torch.float64)
    else:
        gauss = torch.randn(num_classes, basis.shape[1], generator=generator, dtype=torch.float64) @ basis.T
    return gauss / gauss.norm(dim=1, keepdim=True)


def _complement_basis(head_weight: torch.Tensor) -> torch.Tensor:
    """Orthonormal basis ``(d, d - rank)`` of the orthogonal complement of the rows of ``head_weight``."""
    weight = head_weight.to(torch.float64)
    num_rows, dim = weight.shape
    if num_rows >= dim:
        raise ConfigError(
            f"class-neutral carriers need fewer classes ({num_rows}) than feature dimensions ({dim}); use space='full'"
        )
    _, singular, vh = torch.linalg.svd(weight, full_matrices=True)
    rank = int((singular > singular.max() * 1e-10).sum())
    return vh[rank:].T.contiguous()


def _seed_generator(seed: int, *labels: Any) -> torch.Generator:
    material = json.dumps([int(seed), *[str(label) for label in labels]]).encode()
    value = int.from_bytes(hashlib.sha256(material).digest()[:8], "little") & ((1 << 63) - 1)
    return torch.Generator().manual_seed(value)


@dataclass(frozen=True, eq=False)
class Key:
    """Carriers ``(C, d)`` float64 unit rows, the marker they live in, and the seed that drew them.

    Examples:
        >>> from radioactive.nets import NetSpec
        >>> info = MarkerInfo(NetSpec("cnn", 10), weights_sha256="0" * 64, feature_dim=128)
        >>> key = Key.generate(info, seed=0)
        >>> key.carriers.shape
        torch.Size([10, 128])
    """

    carriers: torch.Tensor
    marker: MarkerInfo
    seed: int
    space: str = "full"
    basis: torch.Tensor | None = None
    metadata: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        carriers = self.carriers
        if carriers.dim() != 2:
            raise KeyFileError(f"carriers must be (classes, dim), got shape {tuple(carriers.shape)}")
        if carriers.dtype != torch.float64:
            object.__setattr__(self, "carriers", carriers.to(torch.float64))
        if carriers.shape[1] != self.marker.feature_dim:
            raise KeyFileError(
                f"carriers have dimension {carriers.shape[1]} but the marker's features have {self.marker.feature_dim}"
            )
        if carriers.shape[0] != self.marker.spec.num_classes:
            raise KeyFileError(
                f"key has {carriers.shape[0]} carriers but the marker has {self.marker.spec.num_classes} classes"
            )
        norms = self.carriers.norm(dim=1)
        if not torch.allclose(norms, torch.ones_like(norms), atol=1e-6):
            raise KeyFileError("carriers are not unit vectors; the key file is corrupt")
        if self.space not in CARRIER_SPACES:
            raise KeyFileError(f"unknown carrier space {self.space!r}; choose from {list(CARRIER_SPACES)}")
        if self.space == "neutral" and self.basis is None:
            raise KeyFileError("a class-neutral key needs its subspace basis")

    # -- creation ------------------------------------------------------------------------------------
    @classmethod
    def generate(
        cls,
        marker: MarkerInfo,
        *,
        seed: int | None = None,
        space: str = "full",
        head_weight: torch.Tensor | None = None,
    ) -> Key:
        """Draw a new key for ``marker``.

        Args:
            marker: the marking network's identity (see :func:`radioactive.marker_info`).
            seed: makes the key reproducible; default: 63 random bits from the OS.
            space: ``"full"`` (uniform on the sphere of R^d, as in the paper) or ``"neutral"`` (uniform in the
                orthogonal complement of the marker's classifier rows, so carriers are class-neutral for it;
                needs ``head_weight`` ``(C, d)``).
        """
        if space not in CARRIER_SPACES:
            raise ConfigError(f"unknown carrier space {space!r}; choose from {list(CARRIER_SPACES)}")
        seed = secrets.randbits(63) if seed is None else int(seed)
        basis = None
        if space == "neutral":
            if head_weight is None:
                raise ConfigError("space='neutral' needs the marker's head weight (C, d): pass head_weight=, or use space='full'")
            basis = _complement_basis(head_weight)
        carriers = random_carriers(marker.spec.num_classes, marker.feature_dim, _seed_generator(seed, "carriers"), basis)
        return cls(carriers=carriers, marker=marker, seed=seed, space=space, basis=basis)

    # -- derived quantities ----------------------------------------------------------------------------
    @property
    def num_classes(self) -> int:
        return self.carriers.shape[0]

    @property
    def feature_dim(self) -> int:
        return self.carriers.shape[1]

    @property
    def null_dim(self) -> int:
        """Dimension of the space the carriers are uniform in (d, or d - C for class-neutral keys)."""
        return self.feature_dim if self.basis is None else self.basis.shape[1]

    def control_carriers(self, index: int) -> torch.Tensor:
        """Control carrier set number ``index`` (0-based), ``(C, d)``: drawn like the key, from the key's
        secret seed, never equal to it. Used by the black-box tests; never published."""
        if index < 0:
            raise ValueError(f"control set index must be >= 0, got {index}")
        return random_carriers(
            self.num_classes, self.feature_dim, _seed_generator(self.seed, "control", index), self.basis
        )

    @property
    def fingerprint(self) -> str:
        """16 hex characters naming this key (a hash: reveals nothing about the carriers)."""
        return self._digest()[:16]

    def _public_metadata(self) -> dict[str, Any]:
        return {
            "format": FORMAT_VERSION,
            "num_classes": self.num_classes,
            "feature_dim": self.feature_dim,
            "space": self.space,
            "marker": self.marker.to_dict(),
            "metadata": self.metadata,
        }

    def _digest(self) -> str:
        digest = hashlib.sha256()
        digest.update(json.dumps(self._public_metadata(), sort_keys=True).encode())
        digest.update(str(self.seed).encode())
        digest.update(self.carriers.contiguous().numpy().tobytes())
        if self.basis is not None:
            digest.update(self.basis.contiguous().numpy().tobytes())
        return digest.hexdigest()

    def describe(self) -> dict[str, Any]:
        """Everything about the key that may appear in results: no carriers, no seed."""
        out = self._public_metadata()
        out["fingerprint"] = self.fingerprint
        return out

    def __repr__(self) -> str:
        return (
            f"Key(fingerprint={self.fingerprint}, classes={self.num_classes}, dim={self.feature_dim}, "
            f"space={self.space!r}, marker={self.marker.spec.arch!r})"
        )

    def check_marker(self, marker: MarkerInfo) -> None:
        """Raise :class:`KeyMismatchError` unless ``marker`` is the network this key was made for."""
        mine = self.marker
        if mine.weights_sha256 != marker.weights_sha256 or mine.feature_dim != marker.feature_dim:
            raise KeyMismatchError(
                f"this key (fingerprint {self.fingerprint}) was made for marking network {mine.spec.arch!r} with "
                f"weights sha256 {mine.weights_sha256[:16]}… and {mine.feature_dim}-dim features, but the given "
                f"network is {marker.spec.arch!r} with weights sha256 {marker.weights_sha256[:16]}… and "
                f"{marker.feature_dim}-dim features; use the marking network the key was generated with"
            )

    # -- files ---------------------------------------------------------------------------------------
    def save(self, path: str | os.PathLike) -> Path:
        """Write the key (mode 0600, atomically). Refuses to overwrite an existing file."""
        from safetensors.torch import save_file

        path = Path(path)
        if path.exists():
            raise OutputExistsError(f"key file {str(path)!r} already exists; keys are never overwritten: choose another "
                                    "path (or delete the old key if you are sure it marked nothing)")
        tensors = {"carriers": self.carriers.contiguous()}
        if self.basis is not None:
            tensors["basis"] = self.basis.contiguous()
        header = {
            "radioactive.key": json.dumps(self._public_metadata()),
            "radioactive.seed": str(self.seed),
            "radioactive.sha256": self._digest(),
        }
        with atomic_write(path, mode=0o600) as tmp:
            save_file(tensors, str(tmp), metadata=header)
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> Key:
        """Read a key file, verify its integrity, and warn if other users can read it."""
        from safetensors import safe_open

        path = open_secret(path, "key file", "give the file written by 'radioactive keygen --out'")
        try:
            with safe_open(str(path), framework="pt") as handle:
                header = dict(handle.metadata() or {})
                tensors = {name: handle.get_tensor(name) for name in handle.keys()}
            meta = json.loads(header["radioactive.key"])
            seed = int(header["radioactive.seed"])
            recorded = header["radioactive.sha256"]
            if meta.get("format") != FORMAT_VERSION:
                raise KeyFileError(f"key file {str(path)!r} has format {meta.get('format')!r}, expected {FORMAT_VERSION}")
            key = cls(
                carriers=tensors["carriers"],
                marker=MarkerInfo.from_dict(meta["marker"]),
                seed=seed,
                space=meta.get("space", "full"),
                basis=tensors.get("basis"),
                metadata=dict(meta.get("metadata", {})),
            )
        except KeyFileError as exc:
            raise KeyFileError(f"key file {str(path)!r} fails its integrity check: {exc}") from None
        except Exception as exc:
            raise KeyFileError(
                f"key file {str(path)!r} is unreadable or malformed ({type(exc).__name__}); it may be truncated: "
                "give the file written by 'radioactive keygen' (or a backup of it)"
            ) from None
        if key._digest() != recorded:
            raise KeyFileError(
                f"key file {str(path)!r} fails its integrity check (the content does not match its recorded "
                "fingerprint): it was modified or corrupted"
            )
        return key


def random_key(key: Key, seed: int) -> Key:
    """A fresh key drawn exactly like ``key`` (same marker, same carrier space), from ``seed``.

    The null trials of the detection tests score such keys against the same suspect: under H0 the real key
    is one more draw of this kind.
    """
    carriers = random_carriers(key.num_classes, key.feature_dim, _seed_generator(seed, "carriers"), key.basis)
    return Key(carriers=carriers, marker=key.marker, seed=seed, space=key.space, basis=key.basis)
