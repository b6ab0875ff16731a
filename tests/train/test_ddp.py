"""DistributedDataParallel training under torchrun: two gloo processes on CPU, tiny data."""

import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch

from radioactive.nets import load_checkpoint

pytest.importorskip("torch.distributed")
if not torch.distributed.is_available() or not torch.distributed.is_gloo_available():
    pytest.skip("gloo backend not available", allow_module_level=True)

WORKER = textwrap.dedent(
    """
    import json, sys
    import torch
    torch.set_num_threads(1)
    torch.distributed.init_process_group("gloo")
    from radioactive.nets import NetSpec
    from radioactive.train import TrainRecipe, fit
    rank = torch.distributed.get_rank()
    gen = torch.Generator().manual_seed(0)
    labels = torch.arange(96) % 3
    images = (torch.rand(96, 1, 16, 16, generator=gen) * 255).to(torch.uint8)
    images[:, :, :4] = (labels * 100).to(torch.uint8)[:, None, None, None]  # learnable: a bright top band
    spec = NetSpec("cnn", 3, input_size=(16, 16), kwargs={"width": 4, "feature_dim": 8})
    result = fit(spec, images, labels, recipe=TrainRecipe(epochs=2, batch_size=16, flip=False), seed=5,
                 test=(images, labels))
    flat = torch.cat([p.detach().flatten() for p in result.model.parameters()])
    out = {"rank": rank, "world": result.metrics["world_size"], "steps": result.metrics["steps"],
           "acc": result.metrics["test_accuracy"], "checksum": float(flat.double().sum()),
           "norm": float(flat.double().norm())}
    with open(sys.argv[1] + f".{rank}.json", "w") as handle:
        json.dump(out, handle)
    torch.distributed.barrier()
    torch.distributed.destroy_process_group()
    """
)


# A gloo process can abort at exit, after its work, with this C++ message (seen once, in a session-7 CI run, in
# rank 1 after destroy_process_group); such a launch is run again, once. Any other failure fails the test.
TEARDOWN_ABORT = "terminate called without an active exception"


def _torchrun(args, tmp_path, timeout=240):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", *args]
    for _attempt in range(2):
        proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=timeout)
        if proc.returncode == 0 or TEARDOWN_ABORT not in proc.stdout + proc.stderr:
            break
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def test_ddp_two_gloo_ranks_end_identical(tmp_path):
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    _torchrun([str(script), str(tmp_path / "result")], tmp_path)
    results = [json.loads((tmp_path / f"result.{rank}.json").read_text()) for rank in (0, 1)]
    assert [r["world"] for r in results] == [2, 2]
    # 96 images, global batch 16 -> 6 steps per epoch on each rank (8 images each).
    assert [r["steps"] for r in results] == [12, 12]
    assert results[0]["checksum"] == pytest.approx(results[1]["checksum"], rel=1e-6, abs=1e-6)
    assert results[0]["norm"] == pytest.approx(results[1]["norm"], rel=1e-6)
    assert results[0]["acc"] == results[1]["acc"]  # accuracy is all-reduced over the two shards


def test_cli_train_under_torchrun(tmp_path):
    from PIL import Image

    tree = tmp_path / "tree"
    gen = torch.Generator().manual_seed(0)
    for label, name in enumerate(["a", "b"]):
        (tree / name).mkdir(parents=True)
        for i in range(12):
            array = (torch.rand(16, 16, generator=gen) * 120 + 120 * label).to(torch.uint8).numpy()
            Image.fromarray(array).save(tree / name / f"{i}.png")
    out = tmp_path / "suspect.safetensors"
    _torchrun(["-m", "radioactive.cli", "train", "--data", str(tree), "--test", str(tree), "--out", str(out),
               "--epochs", "1", "--batch-size", "8", "--device", "cpu"], tmp_path)
    model, spec, extra = load_checkpoint(out)
    assert extra["world_size"] == 2 and extra["kind"] == "suspect"
    assert spec.num_classes == 2 and spec.input_size == (16, 16)
    assert len(extra["dataset_fingerprint"]) == 16 and extra["recipe"]["epochs"] == 1
