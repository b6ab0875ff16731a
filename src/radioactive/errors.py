"""Typed errors. Each also inherits the builtin it refines, so ``except ValueError`` keeps working."""

from __future__ import annotations

__all__ = [
    "RadioactiveError",
    "KeyFileError",
    "KeyMismatchError",
    "ModelLoadError",
    "HeadResolutionError",
    "ImageReadError",
    "DatasetError",
    "ManifestError",
    "EndpointError",
    "LockError",
    "OutputWriteError",
    "ConfigError",
    "OutputExistsError",
    "MissingDependencyError",
    "TrainingDivergedError",
]


class RadioactiveError(Exception):
    """Root of every error this package raises on purpose."""


class KeyFileError(RadioactiveError, ValueError):
    """A key file is missing, truncated, tampered with or malformed."""


class KeyMismatchError(RadioactiveError, ValueError):
    """A key is used with a marking network, model or dataset it was not made for."""


class ModelLoadError(RadioactiveError, ValueError):
    """A model file cannot be loaded safely (unknown format, pickle payload, wrong keys/shapes)."""


class HeadResolutionError(RadioactiveError, ValueError):
    """The final linear layer of a classifier cannot be found or does not reproduce its logits."""


class ImageReadError(RadioactiveError, OSError):
    """An image file cannot be decoded or is refused (truncated, too large, wrong type)."""


class DatasetError(RadioactiveError, ValueError):
    """A dataset source (folder, CSV/JSONL list) is malformed."""


class ManifestError(DatasetError):
    """A row of a manifest or image list is malformed."""


class EndpointError(RadioactiveError, RuntimeError):
    """A black-box endpoint failed, timed out or returned an invalid response."""


class LockError(RadioactiveError, RuntimeError):
    """Another run holds the lock on an output directory."""


class OutputWriteError(RadioactiveError, OSError):
    """An output file could not be written (full disk, quota, size limit); nothing partial was left."""


class ConfigError(RadioactiveError, ValueError):
    """An invalid configuration value or file."""


class OutputExistsError(OutputWriteError, FileExistsError):
    """An output that is never overwritten (a key file) already exists."""


class MissingDependencyError(RadioactiveError, ImportError):
    """An optional dependency a requested feature needs (timm for ``timm:<arch>``) is not installed."""


class TrainingDivergedError(RadioactiveError, FloatingPointError):
    """Training produced a non-finite loss (typically a learning rate too high for the data)."""
