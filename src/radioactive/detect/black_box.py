"""Black-box test at the level of carriers (docs/method.md): exact under H0 whatever the model.

The same probe images are marked with the key's carriers and with K control carrier sets drawn like the
key (never published). Per class, a statistic of the suspect's outputs on each version is computed. Under H0
the suspect is independent of all K + 1 carrier sets, which are i.i.d., and every version is produced by the
same function of its carriers; so the K + 1 per-class statistics are exchangeable and the rank of the true
set is uniform: ``p_k = rank / (K + 1)`` exactly. Classes use disjoint probes and independent carriers, so
their p-values are independent and Fisher's combination is valid (conservative for discrete ranks).

Per-image comparisons (true-carrier vs control version of each image, or marked vs clean) treat one random
carrier as hundreds of independent draws and are *not* calibrated; they are deliberately not offered.

The pieces: :mod:`.probes` (probe images, their marked versions, the control-set cache),
:mod:`.observations` (querying the suspect), :mod:`.combine` (the p-values).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from ..errors import ConfigError
from ..key import Key
from ..mark import MarkConfig
from ..marker import Marker
from .combine import verdict_from_observations
from .null import with_null_trials
from .observations import Predict, collect, reference_predictors
from .probes import Probes
from .settings import BlackboxSettings
from .verdict import Verdict

__all__ = ["blackbox", "marking_details"]

DEFAULTS_WARNING = (
    "the probes and control sets were marked with the library's default marking settings (MarkConfig()), which "
    "may differ from how the data was marked; the test loses power when they do: give the marking run's "
    "settings (command line: --marked-with OUT/mark.json)"
)


# Said in every black-box verdict without reference models: the lever that matters most, and how to get it.
REFERENCES_HINT = ("no reference model: clean reference models trained on your originals remove most of the "
                   "carriers' intrinsic response and strengthen this test (still exact); make a bank with "
                   "'radioactive references --data ORIGINALS --out refs/' and pass '--reference-model refs/'")


def marking_details(settings: BlackboxSettings, probes: Probes) -> dict[str, Any]:
    """What the verdict records of how the probes' versions were marked: settings, seed, their origin, a
    one-line summary, and a warning when fresh probes were marked with unstated library defaults."""
    config = settings.mark
    data = settings.data_mark if settings.data_mark is not None else config  # how the data was marked
    origin = settings.mark_origin
    if origin is None:
        origin = "library defaults" if data == MarkConfig() else "given by the caller"
    augment = ",".join(config.augment) or "none"
    out: dict[str, Any] = {
        "config": config.to_dict(), "seed": settings.seed, "origin": origin,
        "summary": f"steps {config.steps}, lr {config.lr:g}, epsilon {config.epsilon:.4f}, PSNR >= "
                   f"{config.min_psnr:g} dB, augment {augment}, seed {settings.seed} ({origin})",
    }
    if settings.mark_origin is None and data == MarkConfig() and probes.published is None:
        out["warning"] = DEFAULTS_WARNING
    if settings.data_mark is not None:
        ours, theirs = config.to_dict(), data.to_dict()
        changed = {name: {"data": theirs.get(name), "probes": ours.get(name)} for name in sorted(set(ours) | set(theirs))
                   if ours.get(name) != theirs.get(name)}
        out["data_config"] = theirs
        out["probes_differ_from_data"] = changed
        out["summary"] += "; probes deliberately marked otherwise than the data: " + (", ".join(
            f"{name} {v['probes']} (data {v['data']})" for name, v in changed.items()) or "no setting differs")
    if settings.probe_mode != "same":
        out["probe_mode"] = settings.probe_mode
        out["summary"] += f"; {settings.probe_mode}-class probes"
    return out


def blackbox(
    predict: Predict,
    key: Key,
    probes: Probes,
    *,
    marker: Marker,
    settings: BlackboxSettings | None = None,
    reference: Predict | Sequence[Predict] | None = None,
) -> Verdict:
    """Test whether the model behind ``predict`` learned the key's carriers, from its outputs only.

    Args:
        predict: images ``(B, c, H, W)`` float in [0, 1] -> scores ``(B, C)`` (logits or probabilities) or
            predicted labels ``(B,)``; a Python callable or a :class:`radioactive.endpoint.Endpoint`.
        key: the secret key.
        probes: :class:`Probes` (fresh clean images, or published marked images with their originals).
        marker: the marking network the key belongs to.
        settings: :class:`BlackboxSettings` (number of controls, statistic, combination, marking settings
            and seed, ...); default ``BlackboxSettings()``.
        reference: predict function of a clean model trained by the auditor (difference in differences), or
            a sequence of them: their mean response is subtracted, per class and version. The test stays exact
            as long as every reference is independent of the key (trained without data marked with it).

    Returns:
        a :class:`Verdict`; its test is ``blackbox-rank`` / ``-t`` / ``-perm`` (``-did`` with a reference model).
        With references, ``details["reference_alone"]`` holds their response alone against the controls
        (exact permutation test, both tails; see :func:`radioactive.detect.combine.reference_alone`).

    Examples:
        >>> verdict = blackbox(predict, key, Probes(images, labels), marker=marker,
        ...                    settings=BlackboxSettings(num_controls=20, combine="perm"))  # doctest: +SKIP
    """
    settings = settings if settings is not None else BlackboxSettings()
    if probes.published is not None and settings.data_mark is not None and settings.data_mark != settings.mark:
        raise ConfigError("published probes and their control twins must be marked with the settings the data was "
                          "marked with; probes marked otherwise (data_mark, command line --probe-min-psnr or "
                          "--probe-steps) need fresh probes")
    if settings.null_trials > 0 and probes.published is not None:
        raise ConfigError("null trials need fresh probes: published images carry the real key only; set "
                          "null_trials=0 (command line: drop --null-trials) or test fresh probes")

    def observe(test_key: Key) -> Verdict:
        obs = collect(predict, test_key, probes, marker=marker, num_controls=settings.num_controls,
                      reference=reference, config=settings.mark, seed=settings.seed, class_map=settings.class_map,
                      output=settings.output, batch_size=settings.batch_size, cache_dir=settings.cache_dir,
                      probe_mode=settings.probe_mode)
        return verdict_from_observations(obs, statistic=settings.statistic, combine=settings.combine,
                                         alpha=settings.alpha, model_id=settings.model_id,
                                         reference_fit=settings.reference_fit)

    verdict = observe(key)
    details = {**verdict.details, "marking": marking_details(settings, probes)}
    if not reference_predictors(reference):
        details["references_hint"] = REFERENCES_HINT
    verdict = replace(verdict, details=details)
    return with_null_trials(verdict, key, settings.null_trials, settings.null_seed, lambda k: observe(k).log10_p)
