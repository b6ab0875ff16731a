"""The steps of ``benchmarks/gpu_check.sh`` (see there): each writes ``OUT/<step>.json``.

    python benchmarks/gpu_check.py STEP OUT [--dry]

Steps: ``pytest`` (the suite's ``gpu`` tests), ``throughput`` (ResNet-18 marking at 224 x 224, 90 steps, in
fp32, TF32 and bf16, against a bare forward + input-gradient loop), ``torchrun`` (``radioactive mark`` in 2
processes on the one GPU against 1 process), ``whitebox`` (white-box detection over 50,000 reference
images), ``summary`` (versions, GPU, every step's time and verdict). Everything is made on the spot: random
images, a randomly initialised torchvision ResNet-18 (no download), the marker shipped in the package.
``--dry`` runs the same steps on CPU at toy sizes (the test suite does, in well under a minute).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ElementTree
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_mark import throughput  # noqa: E402

from radioactive._device import network_precision  # noqa: E402
from radioactive._io import atomic_write_json, versions  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
STEPS = ("pytest", "throughput", "torchrun", "whitebox")
TARGET_IMAGES_PER_SECOND = 200.0  # issue 11, one H200-class GPU, ResNet-18 at 224, 90 steps
TARGET_FRACTION_OF_BARE = 0.60


def _device(dry: bool) -> torch.device:
    if dry:
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise SystemExit("no CUDA device: run with --dry on a machine without a GPU")
    return torch.device("cuda")


def _marker(dry: bool, size: int, classes: int = 1000):
    """A randomly initialised torchvision ResNet-18 (no download); for a dry run, the built-in ``cnn`` at toy
    width (the same code paths, a fraction of the CPU time)."""
    from radioactive.marker import IMAGENET_MEAN, IMAGENET_STD, Marker
    from radioactive.nets import NetSpec, build_from_spec

    torch.manual_seed(0)
    if not dry:
        return Marker.from_torchvision("resnet18", num_classes=classes, input_size=size)
    spec = NetSpec("cnn", classes, in_channels=3, input_size=(size, size), mean=IMAGENET_MEAN, std=IMAGENET_STD,
                   kwargs={"width": 8, "feature_dim": 32})
    return Marker.from_model(build_from_spec(spec), spec)


def _smooth_images(count: int, channels: int, size: int, seed: int) -> torch.Tensor:
    """uint8 ``(count, channels, size, size)``: noise blurred by 8x down- and up-sampling (image-like)."""
    gen = torch.Generator().manual_seed(seed)
    out = torch.empty(count, channels, size, size, dtype=torch.uint8)
    for start in range(0, count, 1024):
        small = torch.rand(min(1024, count - start), channels, max(1, size // 8), max(1, size // 8), generator=gen)
        big = torch.nn.functional.interpolate(small, size=(size, size), mode="bilinear", align_corners=False)
        out[start:start + small.shape[0]] = torch.round(big * 255).to(torch.uint8)
    return out


# -- pytest -----------------------------------------------------------------------------------------------


def step_pytest(out: Path, dry: bool) -> dict:
    # Only the files that hold gpu tests: collecting the whole suite costs more than the dry run may take.
    files = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "tests").rglob("test_*.py")
                   if "pytest.mark.gpu" in p.read_text(errors="replace"))
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "junit.xml"
        started = time.perf_counter()
        done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-m", "gpu", *files, "-p", "no:cacheprovider",
                               f"--junitxml={report}"], cwd=ROOT, capture_output=True, text=True)
        seconds = time.perf_counter() - started
        suite = ElementTree.parse(report).getroot() if report.is_file() else None
    counts = {"tests": 0, "failures": 0, "errors": 0, "skipped": 0}
    failed = []
    if suite is not None:
        for case in suite.iter("testcase"):
            counts["tests"] += 1
            for kind, name in (("failure", "failures"), ("error", "errors"), ("skipped", "skipped")):
                node = case.find(kind)
                if node is not None:
                    counts[name] += 1
                    if kind != "skipped":
                        failed.append({"test": f"{case.get('classname')}::{case.get('name')}",
                                       "message": (node.get("message") or "")[:500]})
    # pytest exits 5 when nothing was collected: no gpu test at all is a failure of the check too.
    ran = counts["tests"] - counts["skipped"]
    passed = done.returncode == 0 and not failed and (dry or ran > 0)
    return {"step": "pytest", "command": f"python -m pytest -m gpu {' '.join(files)}", "exit_status": done.returncode,
            "seconds": seconds, **counts, "ran": ran, "failed": failed, "output_tail": done.stdout[-2000:],
            "passed": passed}


# -- marking throughput -----------------------------------------------------------------------------------


def step_throughput(out: Path, dry: bool) -> dict:
    from radioactive.mark import MarkConfig, choose_batch_size

    device = _device(dry)
    size, steps = (32, 2) if dry else (224, 90)
    marker = _marker(dry, size).to(device)
    results: dict = {}
    for precision in ("fp32", "tf32", "bf16"):
        config = MarkConfig(steps=steps, precision=precision)
        batch = 2 if dry else choose_batch_size(marker, (3, size, size), config)
        images = _smooth_images(batch, 3, size, seed=1)
        labels = torch.arange(batch) % marker.spec.num_classes
        started = time.perf_counter()
        row = throughput(marker, images, labels, config, batch, None, 3, 2 if dry else 10)
        limit = max(row["bare_forward_input_grad_image_steps_per_second"],
                    row["bare_loop_through_fused_copy_image_steps_per_second"])
        row["limit_image_steps_per_second"] = limit  # the faster bare loop: plain marker or its fused copy
        row["limit_images_per_second"] = limit / steps
        row["fraction_of_limit"] = row["image_steps_per_second"] / limit
        row["keeps_floor"] = row["psnr_min"] >= config.min_psnr
        row["wall_seconds"] = time.perf_counter() - started
        results[precision] = row
        # what is done so far survives the step's time limit
        atomic_write_json(out / "throughput.json", {"step": "throughput", "partial": True, "precisions": results,
                                                    "dry": dry, "passed": False})
    reference = results["fp32"]["mark_reported_cosine_mean"]
    for row in results.values():
        # A precision keeps the mark when it meets the floor and its cosine with the carrier (measured in
        # fp32 under a fresh augmentation) is at least 0.9 x fp32's.
        row["keeps_mark"] = bool(row["keeps_floor"] and row["mark_reported_cosine_mean"] >= 0.9 * reference)
        row["meets_targets"] = (row["images_per_second"] >= TARGET_IMAGES_PER_SECOND
                                and row["fraction_of_limit"] >= TARGET_FRACTION_OF_BARE)
    keeping = [name for name, row in results.items() if row["keeps_mark"]]
    best = max(keeping, key=lambda name: results[name]["images_per_second"]) if keeping else None
    return {"step": "throughput", "device": str(device),
            "marker": "builtin cnn (dry run)" if dry else "torchvision resnet18, random init",
            "image_size": size, "steps": steps, "precisions": results, "fastest_keeping_the_mark": best,
            "targets": {"images_per_second": TARGET_IMAGES_PER_SECOND, "fraction_of_bare": TARGET_FRACTION_OF_BARE},
            "meets_targets": bool(best and results[best]["meets_targets"]),
            # the check passes when every precision kept the PSNR floor and the timings exist; the targets
            # are reported, not enforced (dry runs are far from them by design)
            "passed": all(row["keeps_floor"] for row in results.values())}


# -- torchrun ---------------------------------------------------------------------------------------------


def _tree(root: Path, classes: int, per_class: int, size: int) -> Path:
    from PIL import Image

    images = _smooth_images(classes * per_class, 3, size, seed=2)
    for index in range(classes * per_class):
        folder = root / f"class{index % classes}"
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(images[index].permute(1, 2, 0).numpy()).save(folder / f"{index:03d}.png")
    return root


def _run(command: list[str], env: dict[str, str]) -> dict:
    started = time.perf_counter()
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    return {"command": " ".join(command), "exit_status": done.returncode, "seconds": time.perf_counter() - started,
            "output_tail": (done.stdout + done.stderr)[-1500:]}


def _snapshot(folder: Path) -> tuple[dict[str, bytes], list[dict]]:
    files = {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*"))
             # the run record (times), and the lock and bookkeeping files (.radioactive-*) are volatile
             if p.is_file() and p.name not in ("mark.json", "manifest.jsonl") and not p.name.startswith(".radioactive")}
    manifest = folder / "manifest.jsonl"
    rows = [json.loads(line) for line in manifest.read_text().splitlines()] if manifest.is_file() else []
    return files, sorted(rows, key=lambda row: row["source"])


def _compare(reference: Path, other: Path, floor: float) -> dict:
    """Byte identity of every output file and manifest row; where bytes differ (GPU kernels with atomics
    are not bit-reproducible), whether the two marks agree within the cross-device tolerance."""
    import numpy as np
    from PIL import Image

    want_files, want_rows = _snapshot(reference)
    got_files, got_rows = _snapshot(other)
    same_names = sorted(want_files) == sorted(got_files)
    identical = sum(1 for name in want_files if got_files.get(name) == want_files[name])
    keys = ("source", "output", "label", "marked")
    rows_match = [tuple(r.get(k) for k in keys) for r in want_rows] == [tuple(r.get(k) for k in keys) for r in got_rows]
    cosines = []
    for name, data in want_files.items():
        if got_files.get(name, data) != data and name.endswith(".png"):
            source = next(r for r in want_rows if r.get("output") == name)["source"]
            original = np.asarray(Image.open(reference.parent / "src" / source), dtype=np.float64)
            a = np.asarray(Image.open(reference / name), dtype=np.float64) - original
            b = np.asarray(Image.open(other / name), dtype=np.float64) - original
            cosines.append(float((a * b).sum() / max(np.linalg.norm(a) * np.linalg.norm(b), 1e-12)))
    psnr_ok = all(r["psnr"] is None or r["psnr"] >= floor for r in got_rows if r.get("marked"))
    differing = sorted(name for name in want_files if got_files.get(name) != want_files[name])
    return {"files": len(want_files), "identical_files": identical, "differing_files": differing[:20],
            "same_file_names": same_names,
            "manifest_rows": len(got_rows), "manifest_rows_identical": want_rows == got_rows,
            "manifest_sources_and_outputs_match": rows_match, "psnr_floor_met": psnr_ok,
            "differing_images_perturbation_cosine_min": min(cosines) if cosines else None}


def step_torchrun(out: Path, dry: bool) -> dict:
    from radioactive.cli import main as cli
    from radioactive.nets import save_checkpoint

    device = "cpu" if dry else "cuda:0"  # both ranks on the one GPU
    size, steps, per_class, batch = (32, 2, 4, 2) if dry else (224, 10, 8, 4)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")]),
               OMP_NUM_THREADS="1")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        marker = _marker(dry, size, classes=3)
        save_checkpoint(marker.model, work / "marker.safetensors", marker.spec)
        if cli(["keygen", "--marker", str(work / "marker.safetensors"), "--out", str(work / "key.safetensors"),
                "--seed", "3"]) != 0:
            raise RuntimeError("keygen failed")
        _tree(work / "src", 3, per_class, size)

        def command(prefix: list[str], name: str) -> list[str]:
            return prefix + ["-m", "radioactive", "mark", "--key", str(work / "key.safetensors"),
                             "--marker", str(work / "marker.safetensors"), "--data", str(work / "src"),
                             "--fraction", "1", "--out", str(work / name), "--steps", str(steps), "--batch-size",
                             str(batch), "--device", device, "--no-progress"]

        torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
        runs = {"one_process": _run(command([sys.executable], "one"), env),
                "two_processes": _run(command(torchrun, "two"), env)}
        if not dry:  # is marking on this GPU bit-reproducible at all? (CPU marking is)
            runs["one_process_again"] = _run(command([sys.executable], "again"), env)
        ok_runs = all(run["exit_status"] == 0 for run in runs.values())
        rerun = _compare(work / "one", work / "again", 40.0) if ok_runs and not dry else None
        ranks = _compare(work / "one", work / "two", 40.0) if ok_runs else None
    if ranks is None:
        passed = False
    elif dry or (rerun and rerun["identical_files"] == rerun["files"]):
        # where a rerun repeats bytes, two ranks must too
        passed = ranks["identical_files"] == ranks["files"] and ranks["manifest_rows_identical"]
    else:
        # not bit-reproducible on this GPU even in one process: the same rows, the floor, the same marks
        low = ranks["differing_images_perturbation_cosine_min"]
        passed = (ranks["same_file_names"] and ranks["manifest_sources_and_outputs_match"] and ranks["psnr_floor_met"]
                  and (low is None or low >= 0.5))
    return {"step": "torchrun", "device": device, "image_size": size, "images": 3 * per_class, "steps": steps,
            "batch_size": batch, "runs": runs, "rerun_vs_one_process": rerun, "two_vs_one_process": ranks,
            "passed": bool(passed)}


# -- white-box --------------------------------------------------------------------------------------------


def step_whitebox(out: Path, dry: bool) -> dict:
    from radioactive.detect import WhiteboxSettings, whitebox
    from radioactive.detect.white_box import lstsq_reduced, prepare
    from radioactive.key import Key
    from radioactive.nets import build_from_spec
    from radioactive.zoo import default_marker

    device = _device(dry)
    count, check = (200, 200) if dry else (50_000, 5_000)
    marker = default_marker(train_if_missing=False)
    torch.manual_seed(1)
    suspect = build_from_spec(marker.spec).eval()
    key = Key.generate(marker.info, seed=0)
    reference = _smooth_images(count, 1, 28, seed=3)
    # agreement with the CPU on a subset, in IEEE fp32 on both sides
    on_cpu = prepare(suspect, key, reference[:check], marker=marker, batch_size=1000)
    marker.to(device)
    suspect.to(device)
    with network_precision("fp32", device):
        on_device = prepare(suspect, key, reference[:check], marker=marker, batch_size=1000)
    timings, verdict = [], None
    settings = WhiteboxSettings(batch_size=200 if dry else 8192)
    for _ in range(2):
        if device.type == "cuda":
            torch.cuda.synchronize()
        started = time.perf_counter()
        verdict = whitebox(suspect, key, reference, marker=marker, settings=settings)
        timings.append(time.perf_counter() - started)
    # the least squares alone, both ways, on features of the marker's width and of a ResNet's (512)
    lstsq = {}
    for name, dim in (("d128", 128),) if dry else (("d128", 128), ("d512", 512)):
        gen = torch.Generator().manual_seed(4)
        f_m = torch.randn(count, dim, generator=gen, dtype=torch.float64).relu().to(device)
        f_s = (f_m @ torch.randn(dim, dim, generator=gen, dtype=torch.float64).to(device)).contiguous()
        row = {}
        for way, solve in (("host_gelsd", lambda a, b: torch.linalg.lstsq(a.cpu(), b.cpu(), driver="gelsd").solution),
                           ("device_qr_then_host_gelsd", lstsq_reduced)):
            solve(f_m[:256], f_s[:256])  # warm-up
            started = time.perf_counter()
            solve(f_m, f_s)
            row[way] = time.perf_counter() - started
        lstsq[name] = row
    rows_diff = float((on_device.rows - on_cpu.rows).abs().max())
    agree = rows_diff < 1e-3 and abs(on_device.alignment["r2"] - on_cpu.alignment["r2"]) < 1e-4
    return {"step": "whitebox", "device": str(device), "reference_images": count,
            "marker": "shipped fmnist-cnn", "suspect": "same architecture, random init", "image_size": 28,
            "batch_size": settings.batch_size, "seconds": timings, "best_seconds": min(timings),
            "log10_p": verdict.log10_p, "alignment": verdict.alignment,
            "cpu_agreement": {"images": check, "max_abs_row_difference": rows_diff,
                              "r2_cpu": on_cpu.alignment["r2"], "r2_device": on_device.alignment["r2"]},
            "lstsq_seconds": lstsq, "passed": bool(agree)}


# -- summary ----------------------------------------------------------------------------------------------


def step_summary(out: Path, dry: bool, seconds: dict[str, float] | None = None) -> dict:
    steps = {}
    for name in STEPS:
        path = out / f"{name}.json"
        record = json.loads(path.read_text()) if path.is_file() else None
        steps[name] = {"file": path.name if record else None, "passed": bool(record and record.get("passed")),
                       "seconds": (seconds or {}).get(name)}
    gpu = None
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        gpu = {"name": props.name, "capability": f"{props.major}.{props.minor}",
               "memory_gib": props.total_memory / 2**30, "cuda": torch.version.cuda,
               "cudnn": torch.backends.cudnn.version()}
    throughput_record = out / "throughput.json"
    headline = None
    if throughput_record.is_file():
        record = json.loads(throughput_record.read_text())
        headline = {name: {k: row.get(k) for k in ("images_per_second", "image_steps_per_second", "limit_images_per_second",
                                                "fraction_of_limit", "keeps_mark", "batch_size")}
                    for name, row in record["precisions"].items()}
    return {"check": "gpu_check", "dry": dry, "versions": versions(), "gpu": gpu, "threads": torch.get_num_threads(),
            "steps": steps, "throughput": headline, "passed": all(step["passed"] for step in steps.values())}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("step", choices=[*STEPS, "summary"])
    parser.add_argument("out", type=Path)
    parser.add_argument("--dry", action="store_true", help="CPU, toy sizes")
    parser.add_argument("--seconds", default="", help="summary: NAME=SECONDS,... wall times of the steps")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    if args.step == "summary":
        seconds = {k: float(v) for k, _, v in (item.partition("=") for item in args.seconds.split(",") if item)}
        record = step_summary(args.out, args.dry, seconds)
    else:
        record = {"pytest": step_pytest, "throughput": step_throughput, "torchrun": step_torchrun,
                  "whitebox": step_whitebox}[args.step](args.out, args.dry)
        record["dry"] = args.dry
    atomic_write_json(args.out / f"{args.step}.json", record)
    print(json.dumps({"step": args.step, "passed": record["passed"]}))
    return 0 if record["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
