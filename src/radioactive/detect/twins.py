"""The paired-twin secret-coin test (after Huang, Gong and Reiter, CCS 2024): is the published twin of each
image the one the suspect likes better?

Every image marked with twins (:mod:`radioactive.twins`) has two marked versions, of which a secret fair coin
published one. The suspect scores both twins of every pair (a statistic of its outputs: ``loss`` (minus the
cross-entropy), ``margin``, ``prob``, or for label-only access ``label``, the correctness of the predicted
label, averaged over fixed augmented views). A pair is a *win* when the published twin scores better; on a
tie, the twin named by a public tie bit (drawn from ``tie_seed``) is deemed better.

Exactness: under H0 the suspect is independent of the coins, and neither the twins nor the scores depend on
them (both twins are remade from the originals, each in batches of its own). Given everything but the coins,
each pair is a win exactly when its coin equals a fixed bit, so the number of wins is exactly Binomial(N, 1/2)
whatever the model, the statistic or the ties: p = P(Binomial(N, 1/2) >= wins), computed in log space
(:func:`radioactive.stats.binomial_log_sf`; discrete, hence conservative by at most one point's mass).

The test's secret (the coins) is independent of the key's carriers, so its p-value is independent under H0
of a carrier-level test's (white-box or black-box on fresh probes): :func:`fisher_combine` combines them, when
the combination was chosen before looking at the results.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from .. import stats
from .._progress import Progress
from ..errors import ConfigError, DatasetError, KeyMismatchError
from ..key import Key
from ..manifest import read_manifest_rows, read_mark_record
from ..mark import MarkConfig
from ..twins import TwinSecret, mark_twin
from .observations import Predict, output_scores, per_image_statistics
from .published import marking_settings
from .settings import OUTPUTS, STATISTICS, check_choice
from .verdict import DEFAULT_ALPHA, Verdict

__all__ = ["TwinPairs", "VIEWS", "count_wins", "fisher_combine", "pair_scores", "published_pairs", "twin_pairs",
           "twins_test", "verdict_from_scores", "view"]

log = logging.getLogger(__name__)

# Fixed augmented views (flip, rows, columns shifted by this many steps of about H/14 pixels, zero-filled):
# view 0 is the image itself. The same views of both twins are scored.
VIEWS: tuple[tuple[int, int, int], ...] = (
    (0, 0, 0), (1, 0, 0), (0, 1, 0), (0, -1, 0), (0, 0, 1), (0, 0, -1), (1, 1, 0), (1, -1, 0),
    (1, 0, 1), (1, 0, -1), (0, 1, 1), (0, -1, -1), (1, 1, 1), (1, -1, -1), (0, 1, -1), (0, -1, 1),
)
LABEL_VIEWS = 8  # default number of views for the label statistic (1 for the others)


def view(images: torch.Tensor, index: int) -> torch.Tensor:
    """View ``index`` of :data:`VIEWS` of ``(N, c, H, W)`` images (same dtype)."""
    if not 0 <= index < len(VIEWS):
        raise ConfigError(f"view index must be in [0, {len(VIEWS)}), got {index}")
    flip, rows, cols = VIEWS[index]
    out = images.flip(-1) if flip else images
    if rows or cols:
        step = max(1, round(images.shape[-2] / 14))
        height, width = images.shape[-2:]
        padded = F.pad(out, (step, step, step, step))
        top, left = step - rows * step, step - cols * step
        out = padded[..., top:top + height, left:left + width]
    return out.contiguous()


@dataclass(frozen=True, eq=False)
class TwinPairs:
    """Both twins of each image and which one was published.

    Attributes:
        twins: ``(twin 0, twin 1)``, uint8 ``(N, c, H, W)`` each.
        labels: ``(N,)`` int64 classes.
        coins: ``(N,)`` int64, 0 or 1: the published twin.
        ids: the images' ids.
        key_fingerprint, secret_fingerprint: the key and twin secret the pairs were made with.
        details: how the pairs were made (marking settings, how many published files match their twin).
    """

    twins: tuple[torch.Tensor, torch.Tensor]
    labels: torch.Tensor
    coins: torch.Tensor
    ids: list[str]
    key_fingerprint: str
    secret_fingerprint: str
    details: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        count = len(self.ids)
        shapes = {tuple(t.shape[:1]) for t in self.twins} | {tuple(self.labels.shape), tuple(self.coins.shape)}
        if shapes != {(count,)} or any(t.dtype != torch.uint8 or t.dim() != 4 for t in self.twins):
            raise DatasetError(f"twin pairs need two uint8 (N, c, H, W) tensors and N labels, coins and ids; got "
                               f"{[tuple(t.shape) for t in self.twins]}, {tuple(self.labels.shape)}, "
                               f"{tuple(self.coins.shape)} and {count} ids")
        if count and not bool(((self.coins == 0) | (self.coins == 1)).all()):
            raise DatasetError("coins must be 0 or 1")

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def published(self) -> torch.Tensor:
        return torch.where(self.coins.view(-1, 1, 1, 1).bool(), self.twins[1], self.twins[0])

    @property
    def unpublished(self) -> torch.Tensor:
        return torch.where(self.coins.view(-1, 1, 1, 1).bool(), self.twins[0], self.twins[1])


def twin_pairs(marker: Any, key: Key, secret: TwinSecret, images: torch.Tensor, labels: torch.Tensor,
               ids: Sequence[str], *, config: MarkConfig | None = None, published: torch.Tensor | None = None,
               batch_size: int | None = None) -> TwinPairs:
    """Remake both twins of each original image from the key and the secret.

    Args:
        marker: the marking network the key belongs to.
        key, secret: the key and the :class:`radioactive.twins.TwinSecret` of the marking run.
        images: the originals ``(N, c, H, W)`` uint8.
        labels: ``(N,)`` classes.
        ids: each image's id in the marking run (every one must have a coin in the secret).
        config: the marking settings of the run (its ``mark.json``).
        published: the published files ``(N, c, H, W)`` uint8, when at hand: each must be (close to) the twin
            its coin names, which checks that the secret, key and settings are those of the run.
        batch_size: images marked together.

    Raises:
        KeyMismatchError: the secret was made with another key, or the key with another marker.
        ConfigError: an image without a coin in the secret.
        DatasetError: fewer than 90 % of the published files are closer to their coin's twin than to the other.
    """
    secret.check_key(key)
    ids = [str(i) for i in ids]
    coins = torch.tensor([secret.coin(i) for i in ids], dtype=torch.long)
    labels = torch.as_tensor(labels, dtype=torch.long).reshape(-1)
    log.info("marking both twins of %d published images (%d images, %d steps each)", len(ids), 2 * len(ids),
             (config or MarkConfig()).steps)
    with Progress(log, 2 * len(ids), "marking twins", "img") as progress:
        twins = tuple(torch.round(mark_twin(marker, images, labels, key, secret, ids=ids, twin=t, config=config,
                                            batch_size=batch_size, progress=progress.update).images * 255)
                      .to(torch.uint8).cpu() for t in (0, 1))
    details: dict[str, Any] = {"config": (config or MarkConfig()).to_dict()}
    if published is not None:
        if tuple(published.shape) != tuple(twins[0].shape):
            raise DatasetError(f"{tuple(published.shape)} published images for twins of shape {tuple(twins[0].shape)}")
        chosen = torch.where(coins.view(-1, 1, 1, 1).bool(), twins[1], twins[0]).int()
        other = torch.where(coins.view(-1, 1, 1, 1).bool(), twins[0], twins[1]).int()
        near = (published.int() - chosen).pow(2).flatten(1).sum(1)
        far = (published.int() - other).pow(2).flatten(1).sum(1)
        consistent = float(((near == 0) | (2 * near < far)).double().mean()) if len(ids) else 1.0
        details.update(published_exact=float((near == 0).double().mean()) if len(ids) else 1.0,
                       published_consistent=consistent)
        if consistent < 0.9:
            raise DatasetError(f"only {100 * consistent:.0f} % of the published images are the twin their secret coin "
                               f"names (twin secret {secret.fingerprint}); the sidecar, the key or the marking settings "
                               "are not those of the run that published them")
    return TwinPairs(twins=twins, labels=labels, coins=coins, ids=ids, key_fingerprint=key.fingerprint,  # type: ignore[arg-type]
                     secret_fingerprint=secret.fingerprint, details=details)


def published_pairs(folder: str | os.PathLike, secret: TwinSecret, *, key: Key, marker: Any, originals: Any,
                    published: Any = None, limit: int | None = None, batch_size: int | None = None) -> TwinPairs:
    """The twin pairs of the images a ``radioactive mark --twins`` run published in ``folder``.

    Args:
        folder: the run's output folder (its ``mark.json`` records the settings and the secret's fingerprint).
        secret: the run's sidecar (:meth:`radioactive.twins.TwinSecret.load`).
        key, marker: the run's key and marking network.
        originals: ``load_labelled`` of the dataset that was marked (ids as the run's).
        published: ``load_labelled(folder)`` (read here when None).
        limit: use the first ``limit`` marked images (in the folder's order); None: all.

    Raises:
        ConfigError: the folder was not marked with twins.
        KeyMismatchError: the folder was marked with another secret or key.
        DatasetError: originals missing, or of other labels or sizes.
    """
    from ..sources import load_labelled

    where = f"{os.fspath(folder)}/mark.json"
    recorded = read_mark_record(folder).get("settings", {}).get("twins")
    if not isinstance(recorded, dict):
        raise ConfigError(f"{where} records no twins: the folder was not marked with 'radioactive mark --twins', "
                          "so it has no twin pairs to test")
    secret.check_key(key)
    if recorded.get("fingerprint") != secret.fingerprint:
        raise KeyMismatchError(f"{where} says its images were published with twin secret {recorded.get('fingerprint')}, "
                               f"not with this one ({secret.fingerprint}); give the sidecar that run wrote")
    config, _ = marking_settings(folder, key=key)
    published = load_labelled(folder) if published is None else published
    marked = {str(row["source"]) for row in read_manifest_rows(folder) if row.get("marked") and not row.get("bad")}
    rows = [i for i, ident in enumerate(published.ids) if ident in marked][:limit]
    if not rows:
        raise DatasetError(f"{os.fspath(folder)} holds no marked image (per its manifest.jsonl); nothing to test")
    index = {ident: i for i, ident in enumerate(originals.ids)}
    missing = [published.ids[i] for i in rows if published.ids[i] not in index]
    if missing:
        raise DatasetError(f"the originals ({len(originals)} images) do not hold {len(missing)} of the published "
                           f"images, e.g. {missing[0]!r}; give the dataset {os.fspath(folder)} was marked from")
    pub = torch.tensor(rows, dtype=torch.long)
    orig = torch.tensor([index[published.ids[i]] for i in rows], dtype=torch.long)
    labels = published.labels[pub]
    if not torch.equal(originals.labels[orig], labels) or originals.images.shape[1:] != published.images.shape[1:]:
        raise DatasetError(f"the originals differ from the images published in {os.fspath(folder)} in labels or size; "
                           "give the dataset that was marked, unresized")
    return twin_pairs(marker, key, secret, originals.images[orig], labels, [published.ids[i] for i in rows],
                      config=config, published=published.images[pub], batch_size=batch_size)


def pair_scores(predict: Predict, pairs: TwinPairs, *, statistic: str = "margin", views: int | None = None,
                output: str = "auto", batch_size: int = 256) -> tuple[np.ndarray, str]:
    """The suspect's statistic on both twins of every pair, averaged over ``views`` fixed views.

    Returns:
        ``(scores, kind)``: ``(2, N)`` float64 (row t: twin t; larger = the suspect likes it more) and the
        output kind (``logits``, ``probs`` or ``labels``).
    """
    check_choice("statistic", statistic, STATISTICS)
    check_choice("output kind", output, OUTPUTS)
    views = (LABEL_VIEWS if statistic == "label" else 1) if views is None else views
    if isinstance(views, bool) or not isinstance(views, int) or not 1 <= views <= len(VIEWS):
        raise ConfigError(f"views must be an integer in [1, {len(VIEWS)}], got {views!r}")
    targets = pairs.labels.numpy()
    scores = np.zeros((2, len(pairs)), dtype=np.float64)
    kind = output
    total = 2 * views * len(pairs)
    log.info("querying the suspect on %d images (2 twins x %d view%s x %d pairs)", total, views,
             "s" if views > 1 else "", len(pairs))
    with Progress(log, total, "queries", "img") as progress:
        for twin in (0, 1):
            for index in range(views):
                values, kind = output_scores(predict, view(pairs.twins[twin], index), batch_size, kind,
                                             progress=progress.update)
                per_image = per_image_statistics(values, kind, targets)
                if statistic not in per_image:
                    raise ConfigError(f"the model returns labels only; the statistic must be 'label', not "
                                      f"{statistic!r}")
                scores[twin] += per_image[statistic] / views
    return scores, kind


def count_wins(scores: np.ndarray, coins: np.ndarray, *, tie_seed: int = 0) -> tuple[int, int]:
    """``(wins, ties)``: pairs whose published twin (``coins``) scores higher, ties won by twin ``b_i`` (public
    bits drawn from ``tie_seed``). ``scores`` ``(2, N)``; ``coins`` ``(N,)`` or ``(M, N)`` (then ``wins`` is
    ``(M,)``)."""
    scores = np.asarray(scores, dtype=np.float64)
    coins = np.asarray(coins, dtype=np.int64)
    bits = np.random.default_rng(tie_seed).integers(0, 2, scores.shape[1])
    tie = scores[0] == scores[1]
    published_higher = np.where(coins == 1, scores[1] > scores[0], scores[0] > scores[1])
    wins = (published_higher | (tie & (coins == bits))).sum(axis=-1)
    return wins, int(tie.sum())


def verdict_from_scores(scores: np.ndarray, coins: np.ndarray, *, statistic: str, views: int, tie_seed: int = 0,
                        alpha: float = DEFAULT_ALPHA, key_fingerprint: str, secret_fingerprint: str,
                        model_id: str | None = None, details: dict[str, Any] | None = None) -> Verdict:
    """The :class:`Verdict` of the twins test from the scores of both twins ``(2, N)`` and the coins ``(N,)``."""
    count = int(np.asarray(coins).shape[-1])
    if count == 0:
        raise DatasetError("no twin pairs to test")
    wins, ties = count_wins(scores, coins, tie_seed=tie_seed)
    wins = int(wins)
    log_p = stats.binomial_log_sf(wins, count)
    scores = np.asarray(scores, dtype=np.float64)
    coins = np.asarray(coins, dtype=np.int64)
    gap = np.where(coins == 1, scores[1] - scores[0], scores[0] - scores[1])
    return Verdict(
        test=f"twins-{statistic}",
        log10_p=float(stats.to_log10(log_p)),
        alpha=alpha,
        classes=(),
        z=float(stats.z_from_log_p(log_p)),
        key_fingerprint=key_fingerprint,
        model_sha256=model_id,
        counts={"pairs": count, "wins": wins, "ties": ties},
        details={"statistic": statistic, "views": views, "tie_seed": tie_seed, "win_rate": wins / count,
                 "mean_gap": float(gap.mean()), "secret_fingerprint": secret_fingerprint,
                 "null": "wins ~ Binomial(pairs, 1/2) exactly (the published twin was chosen by a secret fair coin)",
                 **(details or {})},
    )


def twins_test(predict: Predict, pairs: TwinPairs, *, statistic: str = "margin", views: int | None = None,
               output: str = "auto", alpha: float = DEFAULT_ALPHA, tie_seed: int = 0, batch_size: int = 256,
               model_id: str | None = None) -> Verdict:
    """Test H0 "the suspect is independent of the secret coins" (it was not trained on the published twins).

    Args:
        predict: the suspect: float [0, 1] images ``(B, c, H, W)`` -> scores ``(B, C)`` or labels ``(B,)``.
        pairs: :class:`TwinPairs` (:func:`published_pairs` or :func:`twin_pairs`).
        statistic: ``margin``, ``loss``, ``prob`` or ``label`` (the only one for label outputs).
        views: fixed views averaged per twin (default 8 for ``label``, else 1).
        output: what ``predict`` returns: ``auto``, ``logits``, ``probs`` or ``labels``.
        alpha: significance level of ``detected``.
        tie_seed: seed of the public tie bits (any value keeps the test exact; it is recorded).
        model_id: recorded as the verdict's ``model_sha256``.

    Returns:
        :class:`Verdict` ``twins-<statistic>`` with counts ``pairs``, ``wins``, ``ties``.
    """
    if not 0 < alpha < 1:
        raise ConfigError(f"alpha must be in (0, 1), got {alpha}")
    if len(pairs) == 0:
        raise DatasetError("no twin pairs to test")
    scores, kind = pair_scores(predict, pairs, statistic=statistic, views=views, output=output, batch_size=batch_size)
    views = (LABEL_VIEWS if statistic == "label" else 1) if views is None else views
    return verdict_from_scores(scores, pairs.coins.numpy(), statistic=statistic, views=views, tie_seed=tie_seed,
                               alpha=alpha, key_fingerprint=pairs.key_fingerprint,
                               secret_fingerprint=pairs.secret_fingerprint, model_id=model_id,
                               details={"output_kind": kind, **pairs.details})


def _secret_of(verdict: Verdict) -> str:
    """The secret a verdict's p-value depends on: the twin secret of a twins test, else the key."""
    return verdict.details.get("secret_fingerprint") or f"key {verdict.key_fingerprint}"


def fisher_combine(verdicts: Sequence[Verdict], *, alpha: float | None = None) -> Verdict:
    """Fisher's combination of verdicts whose p-values are independent under H0: each must rest on its own
    secret (a carrier-level test on the key and a twins test on its coins, say). Decide to combine before
    looking at the results; a discrete p-value (the twins test's) keeps the combination valid (conservative).

    Raises:
        ConfigError: fewer than two verdicts, or two that rest on the same secret (e.g. two statistics of the
            same twins, or the white-box and black-box tests of one key).
    """
    verdicts = list(verdicts)
    if len(verdicts) < 2:
        raise ConfigError("Fisher's combination needs at least two verdicts")
    secrets = [_secret_of(v) for v in verdicts]
    shared = sorted({s for s in secrets if secrets.count(s) > 1})
    if shared:
        tests = [v.test for v, s in zip(verdicts, secrets) if s == shared[0]]
        raise ConfigError(f"{tests} all rest on the same secret ({shared[0]}), so their p-values are not independent; "
                          "combine one test per secret (e.g. one carrier-level test and one twins test)")
    log_p = stats.fisher_log_sf([v.log10_p * math.log(10) for v in verdicts])
    keys = sorted({v.key_fingerprint for v in verdicts})
    return Verdict(
        test="fisher(" + "+".join(v.test for v in verdicts) + ")",
        log10_p=float(stats.to_log10(log_p)),
        alpha=verdicts[0].alpha if alpha is None else alpha,
        classes=(),
        z=float(stats.z_from_log_p(log_p)),
        key_fingerprint="+".join(keys),
        model_sha256=verdicts[0].model_sha256,
        counts={"tests": len(verdicts)},
        details={"combination": "fisher",
                 "parts": [{"test": v.test, "log10_p": v.log10_p, "secret": s} for v, s in zip(verdicts, secrets)]},
    )
