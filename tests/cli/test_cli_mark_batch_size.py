"""``radioactive mark``'s batch size: the marker's rule (on CUDA, the device-memory probe), recorded in mark.json
so that a resumed run plans the same batches whatever the probe says the second time.

The CUDA probe (:func:`radioactive.mark.choose_batch_size`) is faked on CPU: it returns what a device with a
given free memory would hold.
"""

import json

import radioactive._shard as shard
import radioactive.publish as publish
from radioactive._io import sha256_file
from radioactive.cli import EXIT_INTERRUPTED, main
from radioactive.manifest import VOLATILE_FILES
from radioactive.mark import mark as real_mark


def _mark(tmp, src, out, *extra):
    return main(["mark", "--key", str(tmp / "key.safetensors"), "--data", str(src), "--fraction", "0.5",
                 "--out", str(out), "--steps", "4", "--no-progress", *extra])


def _published(out):
    return {str(p.relative_to(out)): sha256_file(p) for p in sorted(out.rglob("*"))
            if p.is_file() and p.name not in VOLATILE_FILES}


def _fake_probe(images: int, probed: list):
    """A memory probe on a device whose free memory holds ``images`` marking steps."""

    def probe(marker, image_shape, config=None):
        probed.append(tuple(image_shape))
        return images

    return probe


def _batches(monkeypatch, interrupt_at=None):
    """Spy on the batches marked (their sizes); with ``interrupt_at``, Ctrl-C before that batch."""
    sizes = []

    def spy(marker, images, *args, **kwargs):
        if interrupt_at is not None and len(sizes) == interrupt_at:
            raise KeyboardInterrupt
        sizes.append(images.shape[0])
        return real_mark(marker, images, *args, **kwargs)

    monkeypatch.setattr(shard, "mark", spy)
    return sizes


def test_mark_plans_with_the_memory_probe_and_a_resume_plans_the_same(mark_setup, monkeypatch):
    tmp, src = mark_setup
    probed = []
    monkeypatch.setattr(publish, "choose_batch_size", _fake_probe(2, probed), raising=False)
    sizes = _batches(monkeypatch)
    assert _mark(tmp, src, tmp / "whole") == 0
    # 9 images to mark, of two sizes (batches hold one size), in batches of 2 (one odd batch per size at most)
    whole = list(sizes)
    assert sum(sizes) == 9 and max(sizes) == 2 and sizes.count(1) <= 2
    assert probed == [(3, 18, 20)]  # probed once, on the largest images to mark (the colour 18 x 20 JPEGs)
    assert json.loads((tmp / "whole" / "mark.json").read_text())["batch_size"] == 2

    # Interrupted after two batches; on resume the probe finds more free memory, but the plan is the recorded one.
    sizes = _batches(monkeypatch, interrupt_at=2)
    assert _mark(tmp, src, tmp / "resumed") == EXIT_INTERRUPTED
    assert sizes == whole[:2]
    assert json.loads((tmp / "resumed" / "mark.json").read_text())["batch_size"] == 2
    monkeypatch.setattr(publish, "choose_batch_size", _fake_probe(5, probed), raising=False)
    sizes = _batches(monkeypatch)
    assert _mark(tmp, src, tmp / "resumed") == 0
    assert sizes == whole[2:]  # the batches the first run did not reach, as the uninterrupted run planned them
    assert json.loads((tmp / "resumed" / "mark.json").read_text())["batch_size"] == 2
    assert _published(tmp / "resumed") == _published(tmp / "whole")  # the same bytes as the uninterrupted run
    assert probed == [(3, 18, 20)] * 2  # the interrupted run probed; its resume did not


def test_an_explicit_batch_size_is_recorded_and_the_probe_not_run(mark_setup, monkeypatch):
    tmp, src = mark_setup
    probed = []
    monkeypatch.setattr(publish, "choose_batch_size", _fake_probe(2, probed), raising=False)
    sizes = _batches(monkeypatch)
    assert _mark(tmp, src, tmp / "dst", "--batch-size", "4") == 0
    assert probed == [] and max(sizes) == 4
    assert json.loads((tmp / "dst" / "mark.json").read_text())["batch_size"] == 4


def test_off_cuda_the_probe_is_the_pixel_budget(mark_setup):
    tmp, src = mark_setup
    assert _mark(tmp, src, tmp / "dst") == 0
    # the tiny marker takes 16 x 16 inputs: 2^19 / 256 = 2048 images, capped at 512 (the CPU rule as before)
    assert json.loads((tmp / "dst" / "mark.json").read_text())["batch_size"] == 512
