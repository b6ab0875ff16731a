"""Simulating the trainer: a standard supervised recipe on whatever images it is given.

The trainer knows nothing about keys: it trains from scratch, fine-tunes a given network, fits a linear
probe on frozen features, or distils a teacher, with SGD + momentum, a cosine or step schedule, random crop
(with padding) and horizontal flip. Images are ``(N, c, H, W)`` uint8 or float in [0, 1]; models take [0, 1]
images (:func:`radioactive.nets.build_from_spec` puts the normalisation inside). Under ``torchrun`` (an
initialised process group) the model is wrapped in DistributedDataParallel and each rank trains on its
shard of every epoch's permutation.

Examples:
    >>> import torch
    >>> from radioactive.nets import NetSpec
    >>> from radioactive.train import TrainRecipe, fit
    >>> images = torch.randint(0, 256, (64, 1, 16, 16), dtype=torch.uint8)
    >>> labels = torch.arange(64) % 2
    >>> result = fit(NetSpec("cnn", 2, input_size=(16, 16), kwargs={"width": 4, "feature_dim": 8}),
    ...              images, labels, recipe=TrainRecipe(epochs=1, batch_size=32), seed=0)
    >>> result.metrics["epochs"]
    1
"""


from __future__ import annotations

from .batches import augment_batch, dataset_fingerprint
from .loop import evaluate, fit, train_classifier
from .recipe import MODES, SCHEDULES, TrainRecipe, TrainResult

__all__ = [
    "MODES",
    "SCHEDULES",
    "TrainRecipe",
    "TrainResult",
    "fit",
    "train_classifier",
    "evaluate",
    "augment_batch",
    "dataset_fingerprint",
]
