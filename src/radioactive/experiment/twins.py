"""The paired-twin secret-coin test inside a grid (``[twins] enabled = true``): twin marking of the marked
subsets, the published set (the twin each secret coin names), and the test of a run's suspect.

Per grid seed, one :class:`radioactive.twins.TwinSecret` (its seed: :func:`derive_seed` ``("twins", seed)``)
covers the largest fraction's marked subset; both twins of every image are made once by
:func:`radioactive.twins.mark_twins` and cached, so smaller fractions publish nested subsets of the same
twins, as plain marking does. An image's id is its index in the owner split.

The images the ``published`` test probes with (:meth:`Context.published_choice`) stay marked plainly: that
test's control twins are marked in the plain marking's streams along the key's carriers, which a twin's
secret direction and stream are not, so their exchangeability (hence the test's exactness) needs the plain
mark. They are left out of the pairs. The twins test stays exact with any set of pairs: its pairs are fixed
before the coins play any part, and both twins of each are made without them.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from .._io import atomic_write
from ..detect.observations import model_predictor
from ..detect.twins import TwinPairs, twins_test
from ..detect.verdict import Verdict
from ..errors import ConfigError
from ..twins import TwinSecret, mark_twins
from .identity import content_hash, derive_seed

__all__ = ["plain_indices", "published_top", "twin_pairs", "twin_secret", "twins_verdicts"]

log = logging.getLogger(__name__)

# Every function takes the experiment's radioactive.experiment.Context (not imported: it imports this module).
Context = Any


def _top(context: Context, seed: int) -> torch.Tensor:
    return context.selection(seed, max(context.config.fractions))


def plain_indices(context: Context, seed: int) -> torch.Tensor:
    """Sorted owner indices marked plainly in a twins grid: the ``published`` test's probes (else none)."""
    if "published" not in context.config.detect.tests:
        return torch.zeros(0, dtype=torch.long)
    return context.published_choice(seed)[1]


def _twinned(context: Context, seed: int, indices: torch.Tensor) -> torch.Tensor:
    """``indices`` less the plainly marked ones (sorted)."""
    plain = set(plain_indices(context, seed).tolist())
    return torch.tensor([i for i in indices.tolist() if i not in plain], dtype=torch.long)


def twin_secret(context: Context, seed: int) -> TwinSecret:
    """The secret of grid seed ``seed``: a coin for every twinned image of the largest fraction's subset."""
    key = context.key(seed)
    ids = [str(i) for i in _twinned(context, seed, _top(context, seed)).tolist()]
    return TwinSecret.generate(key, ids, spread=float(context.config.twins.spread), seed=derive_seed("twins", seed))


def _marked_twins(context: Context, seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, TwinSecret]:
    """(twinned owner indices, twin 0 and twin 1 uint8 ``(N, c, H, W)``, PSNR of both ``(2, N)``, secret); cached."""
    config = context.config
    key, secret = context.key(seed), twin_secret(context, seed)
    indices = _twinned(context, seed, _top(context, seed))
    ident = content_hash({"key": key.fingerprint, "mark": config.mark_config().to_dict(), "twins": secret.fingerprint,
                          "indices": content_hash(indices.tolist()), "data": context.train_fingerprint()})
    path = context.cache / f"twins-{ident}.safetensors"
    if path.is_file():
        stored = load_file(str(path))
        return indices, stored["twin0"], stored["twin1"], stored["psnr"], secret
    images, labels = context.data["owner"]
    if len(indices) == 0:
        empty = images[:0].clone()
        return indices, empty, empty.clone(), torch.zeros(2, 0, dtype=torch.float64), secret
    start = time.perf_counter()
    log.info("marking twins of %d training images (seed %d)", len(indices), seed)
    results = mark_twins(context.marker, images[indices], labels[indices], key, secret,
                         ids=[str(i) for i in indices.tolist()], config=config.mark_config())
    twins = [(r.images.detach().cpu() * 255).round().clamp(0, 255).to(torch.uint8) for r in results]
    psnr = torch.stack([r.psnr.detach().cpu().to(torch.float64) for r in results])
    context.cache.mkdir(parents=True, exist_ok=True)
    with atomic_write(path) as tmp:
        save_file({"twin0": twins[0].contiguous(), "twin1": twins[1].contiguous(), "psnr": psnr.contiguous()}, str(tmp),
                  metadata={"seconds": str(time.perf_counter() - start), "secret": secret.fingerprint})
    return indices, twins[0], twins[1], psnr, secret


def published_top(context: Context, seed: int, indices: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(published uint8 images, PSNR) of the owner images ``indices`` (the largest fraction's subset): the twin
    each coin names, or the plain mark of the ``published`` test's probes."""
    twinned, first, second, psnr, secret = _marked_twins(context, seed)
    coins = torch.tensor([secret.coin(str(i)) for i in twinned.tolist()], dtype=torch.long)
    chosen = torch.where(coins.view(-1, 1, 1, 1).bool(), second, first)
    chosen_psnr = psnr.gather(0, coins.view(1, -1)).flatten() if len(coins) else psnr[0]
    images = context.data["owner"][0]
    out = torch.zeros((len(indices), *images.shape[1:]), dtype=torch.uint8)
    out_psnr = torch.zeros(len(indices), dtype=torch.float64)
    row = {int(i): n for n, i in enumerate(twinned.tolist())}
    mine = [n for n, i in enumerate(indices.tolist()) if int(i) in row]
    if mine:
        source = torch.tensor([row[int(indices[n])] for n in mine], dtype=torch.long)
        out[mine], out_psnr[mine] = chosen[source], chosen_psnr[source]
    plain = plain_indices(context, seed)
    if len(plain):
        _, _, streams = context.published_choice(seed)
        marked, plain_psnr = context.marked_plain(seed, plain, streams=streams.tolist())
        position = {int(i): n for n, i in enumerate(plain.tolist())}
        rest = [n for n, i in enumerate(indices.tolist()) if int(i) in position]
        source = torch.tensor([position[int(indices[n])] for n in rest], dtype=torch.long)
        out[rest], out_psnr[rest] = marked[source], plain_psnr[source]
    return out, out_psnr


def twin_pairs(context: Context, seed: int, fraction: float) -> TwinPairs:
    """Both twins of the twinned images of ``fraction``'s marked subset (on a 0 % run: of the smallest non-zero
    fraction's, never published, so the test is a calibration check) and their coins.

    Raises:
        ConfigError: no twinned image in that subset (the ``published`` test's probes take all of it).
    """
    if fraction <= 0:
        fraction = min(f for f in context.config.fractions if f > 0)
    twinned, first, second, _, secret = _marked_twins(context, seed)
    wanted = _twinned(context, seed, context.selection(seed, fraction))
    if len(wanted) == 0:
        raise ConfigError(f"no twin pairs at fraction {fraction:g} (seed {seed}): the 'published' test's probes "
                          f"(published_probes = {context.config.detect.published_probes} per class) take every marked "
                          "image; lower published_probes or raise the smallest fraction")
    position = {int(i): n for n, i in enumerate(twinned.tolist())}
    rows = torch.tensor([position[int(i)] for i in wanted.tolist()], dtype=torch.long)
    ids = [str(i) for i in wanted.tolist()]
    return TwinPairs(twins=(first[rows], second[rows]), labels=context.data["owner"][1][wanted].clone(),
                     coins=torch.tensor([secret.coin(i) for i in ids], dtype=torch.long), ids=ids,
                     key_fingerprint=secret.key_fingerprint, secret_fingerprint=secret.fingerprint,
                     details={"config": context.config.mark_config().to_dict(), "pairs_fraction": fraction})


def twins_verdicts(context: Context, seed: int, fraction: float, model: torch.nn.Module) -> dict[str, Verdict]:
    """The twins test of ``model`` with each configured statistic, by record name (``twins-<statistic>``)."""
    settings = context.config.twins
    pairs = twin_pairs(context, seed, fraction)
    predict = model_predictor(model)
    return {f"twins-{statistic}": twins_test(predict, pairs, statistic=statistic, views=settings.views or None,
                                              alpha=context.config.detect.alpha)
            for statistic in settings.statistics}
