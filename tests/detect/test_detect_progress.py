"""Long work in ``detect`` says what it does (issue 26, item 6): the marking of the probes and control sets (how
many images, an estimate of the time, where they are cached), the reference alignment of the white-box test
and the queries to the suspect (for an endpoint: how many requests), through logging; never a print."""

from __future__ import annotations

import logging
import math
import re

import numpy as np
import torch
from helpers.detect_files import blackbox_detect_args, write_detect_files
from helpers.tiny import BLACKBOX_SPEC, QUICK_MARK, no_grad_predictor, tiny_model

from radioactive._progress import Progress, duration
from radioactive.cli import main
from radioactive.detect import Probes
from radioactive.detect.observations import collect
from radioactive.detect.probes import marked_versions
from radioactive.detect.white_box import whitebox
from radioactive.endpoint import Endpoint
from radioactive.key import Key


def _messages(caplog, logger: str) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == logger and r.levelno == logging.INFO]


def test_probe_marking_says_how_much_how_long_and_where_it_is_cached(marker, probes, tmp_path, caplog):
    key = Key.generate(marker.info, seed=5)
    cache = tmp_path / "controls"
    caplog.set_level(logging.INFO, logger="radioactive.detect.probes")
    list(marked_versions(marker, key, probes, num_controls=3, config=QUICK_MARK, cache_dir=cache))
    lines = _messages(caplog, "radioactive.detect.probes")
    n = len(probes)
    assert re.fullmatch(rf"marking {n} probe images x 4 carrier sets \({4 * n} images, 2 steps each; about \d+ s\); "
                        rf"cached in {re.escape(str(cache))} for the next audit", lines[0]), lines
    assert lines[-1].startswith(f"marked {4 * n} probe images in ")

    caplog.clear()
    list(marked_versions(marker, key, probes, num_controls=3, config=QUICK_MARK, cache_dir=cache))
    assert _messages(caplog, "radioactive.detect.probes") == [
        f"the 4 marked versions of the {n} probe images are read from the cache in {cache}"]

    caplog.clear()
    list(marked_versions(marker, key, probes, num_controls=5, config=QUICK_MARK, cache_dir=cache))
    first = _messages(caplog, "radioactive.detect.probes")[0]
    assert f"x 2 carrier sets ({2 * n} images" in first and ", 4 of 6 sets read from the cache;" in first

    caplog.clear()
    list(marked_versions(marker, key, probes, num_controls=1, config=QUICK_MARK))
    assert _messages(caplog, "radioactive.detect.probes")[0].endswith("; not cached (no cache folder)")


class _LocalEndpoint(Endpoint):
    """An :class:`Endpoint` answered by a local model (same batching into requests, no HTTP)."""

    def __init__(self, model: torch.nn.Module, **options):
        super().__init__("http://127.0.0.1:9/predict", **options)
        self.predict = no_grad_predictor(model)

    def __call__(self, images: torch.Tensor) -> np.ndarray:
        self.requests += math.ceil(images.shape[0] / self.batch_size)
        return self.predict(images).numpy()


def test_queries_to_an_endpoint_are_counted_before_they_start(marker, probes, caplog):
    key = Key.generate(marker.info, seed=5)
    endpoint = _LocalEndpoint(tiny_model(BLACKBOX_SPEC, seed=2).eval(), batch_size=5)
    caplog.set_level(logging.INFO, logger="radioactive.detect.observations")
    collect(endpoint, key, probes, marker=marker, num_controls=2, config=QUICK_MARK, batch_size=16,
            reference=no_grad_predictor(tiny_model(BLACKBOX_SPEC, seed=3).eval()))
    n = len(probes)
    announced = _messages(caplog, "radioactive.detect.observations")[0]
    assert announced == (f"querying the suspect and 1 reference model (the suspect: {endpoint.requests} requests to "
                         f"http://127.0.0.1:9/predict) on 3 versions x {n} probe images ({3 * n * 2} images), as "
                         "each version is marked")
    assert endpoint.requests == 3 * (math.ceil(16 / 5) + math.ceil((n - 16) / 5))


def test_reference_alignment_is_announced(marker, caplog):
    key = Key.generate(marker.info, seed=5)
    reference = torch.rand(40, 1, *BLACKBOX_SPEC.input_size, generator=torch.Generator().manual_seed(0))
    caplog.set_level(logging.INFO, logger="radioactive.detect.white_box")
    whitebox(marker.model, key, reference, marker=marker)
    assert ("reference alignment: features of 40 clean reference images through the marker and the suspect"
            in _messages(caplog, "radioactive.detect.white_box"))


def test_progress_lines_off_a_terminal(caplog):
    log = logging.getLogger("radioactive.test_progress")
    caplog.set_level(logging.INFO, logger=log.name)
    with Progress(log, 10, "marking probes", "img", every=0, bar=False) as progress:
        for _ in range(5):
            progress.update(2)
    lines = _messages(caplog, log.name)
    assert len(lines) == 4 and re.fullmatch(r"marking probes: 2 / 10 img \(20 %\), about \d+ s left", lines[0])
    assert duration(0.2) == "1 s" and duration(300) == "5 min" and duration(3 * 3600) == "3.0 h"


def test_detect_black_box_reports_the_marking_and_the_queries(tmp_path, caplog):
    """The command's INFO log (on stderr outside pytest, which holds the root logger here) carries both."""
    write_detect_files(tmp_path, classes=3, per_class=2, planted=0.0, images="src")
    args = blackbox_detect_args(tmp_path, 2, "--steps", "2")
    args[args.index("--cache-dir") + 1] = str(tmp_path / "cache")
    caplog.set_level(logging.INFO, logger="radioactive")
    assert main(args) == 0
    shown = "\n".join(r.getMessage() for r in caplog.records)
    assert "marking 6 probe images x 3 carrier sets (18 images, 2 steps each; about" in shown
    assert f"cached in {tmp_path / 'cache'} for the next audit" in shown
    assert "querying the suspect on 3 versions x 6 probe images (18 images)" in shown


def test_fixtures_are_the_black_box_ones(probes):
    assert isinstance(probes, Probes) and len(probes) > 16
