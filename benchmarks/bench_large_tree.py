"""Large datasets: listing, selection, a full ``radioactive mark`` and the rerun of a finished output on a
synthetic tree of small images (default 100,000 16 x 16 grey PNGs in 10 classes). Writes JSON.

Every phase runs in its own process; its wall time and peak resident memory (``wait4``'s ``ru_maxrss``) are
recorded. The marking is kept cheap (1 % marked, 2 steps) so that the copying and the bookkeeping dominate.

    flock /tmp/radioactive-heavy.lock .venv/bin/python benchmarks/bench_large_tree.py
    # the code before a change, for comparison (a git worktree of it):
    flock /tmp/radioactive-heavy.lock .venv/bin/python benchmarks/bench_large_tree.py --baseline /tmp/orig/src
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent

LIST_AND_SELECT = """
import json, sys, time
t0 = time.perf_counter()
from radioactive.sources import open_source
from radioactive.publish import output_names, select_marked
t1 = time.perf_counter()
source = open_source(sys.argv[1])
t2 = time.perf_counter()
chosen = select_marked(source, float(sys.argv[2]), list(range(len(source.classes))), 0)
t3 = time.perf_counter()
names = output_names(source, chosen)
t4 = time.perf_counter()
print(json.dumps({"images": len(source), "selected": len(chosen), "import_s": t1 - t0, "list_s": t2 - t1,
                  "select_s": t3 - t2, "output_names_s": t4 - t3}))
"""

VERIFY_ONLY = """
import json, resource, sys, time
from pathlib import Path
from radioactive.sources import open_source
from radioactive.publish import output_names, select_marked
from radioactive.manifest import load_verified_rows
rss = lambda: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
imported = rss()
t0 = time.perf_counter()
source = open_source(sys.argv[1])
names = output_names(source, select_marked(source, float(sys.argv[2]), list(range(len(source.classes))), 0))
t1 = time.perf_counter()
options = {} if sys.argv[4] == "default" else {"verify": sys.argv[4]}  # "default": code without the option
kept = load_verified_rows(Path(sys.argv[3]), source, names, **options)
t2 = time.perf_counter()
print(json.dumps({"rows_kept": len(kept), "list_select_names_s": t1 - t0, "verify_s": t2 - t1,
                  "rss_after_imports_mib": imported, "peak_rss_growth_mib": rss() - imported}))
"""


def make_tree(src: Path, images: int, classes: int, size: int) -> float:
    """Random grey PNGs, ``images // classes`` per class (cached: kept if the count matches)."""
    import numpy as np
    from PIL import Image

    per_class = images // classes
    done = src / ".complete"
    if done.is_file() and done.read_text() == f"{images} {classes} {size}":
        return 0.0
    started = time.monotonic()
    rng = np.random.default_rng(0)
    for label in range(classes):
        folder = src / f"class{label:02d}"
        folder.mkdir(parents=True, exist_ok=True)
        pixels = rng.integers(0, 256, (per_class, size, size), dtype=np.uint8)
        for index in range(per_class):
            Image.fromarray(pixels[index]).save(folder / f"{index:06d}.png", compress_level=1)
    done.write_text(f"{images} {classes} {size}")
    return time.monotonic() - started


def make_key(cache: Path, classes: int, size: int) -> Path:
    import torch

    from radioactive.cli import main as cli
    from radioactive.nets import NetSpec, build_from_spec, save_checkpoint

    key = cache / "key.safetensors"
    if not key.is_file():
        torch.manual_seed(0)
        spec = NetSpec("cnn", classes, in_channels=1, input_size=(size, size), kwargs={"width": 4, "feature_dim": 16})
        save_checkpoint(build_from_spec(spec).eval(), cache / "marker.safetensors", spec)
        assert cli(["keygen", "--marker", str(cache / "marker.safetensors"), "--out", str(key), "--seed", "1"]) == 0
    return key


def measured(command: list[str], *, env: dict[str, str], timeout: float) -> dict:
    """Run ``command``; its wall time, peak RSS, exit status and output (killed after ``timeout``)."""
    started = time.monotonic()
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, text=True)
    try:
        stdout, stderr = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        stdout, stderr = process.communicate()
        return {"timed_out_after_s": timeout, "command": _shown(command)}
    wall = time.monotonic() - started
    return {"wall_s": round(wall, 3), "returncode": process.returncode, "stdout": stdout[-2000:],
            "stderr": stderr[-2000:], "command": _shown(command)}


def _shown(command: list[str]) -> str:
    return " ".join(part.replace(str(REPO) + "/", "") for part in command)


def timed_run(command: list[str], *, env: dict[str, str], timeout: float) -> dict:
    """Like :func:`measured`, through a tiny wrapper process that reports its child's peak RSS (this process's
    ``RUSAGE_CHILDREN`` would report the largest of all phases so far)."""
    wrapper = ("import os, resource, subprocess, sys, json; p = subprocess.run(sys.argv[1:]); "
               "r = resource.getrusage(resource.RUSAGE_CHILDREN); "
               "print(json.dumps({'peak_rss_mib': r.ru_maxrss / 1024}), file=sys.stderr); sys.exit(p.returncode)")
    result = measured([sys.executable, "-c", wrapper, *command], env=env, timeout=timeout)
    if "stderr" in result:
        found = re.findall(r'\{"peak_rss_mib": ([0-9.]+)\}', result["stderr"])
        if found:
            result["peak_rss_mib"] = round(float(found[-1]), 1)
        hashed = re.findall(r"resuming: (\d+) files hashed", result["stderr"])
        if hashed:
            result["files_hashed"] = int(hashed[-1])
        result["command"] = _shown(command)
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=100_000)
    parser.add_argument("--classes", type=int, default=10)
    parser.add_argument("--size", type=int, default=16)
    parser.add_argument("--fraction", type=float, default=0.01)
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--cache", default=str(HERE / "cache" / "large_tree"))
    parser.add_argument("--baseline", help="src folder of other code to time too (e.g. a worktree of HEAD)")
    parser.add_argument("--timeout", type=float, default=600, help="per phase, seconds")
    parser.add_argument("--out", default=str(HERE / "results" / "large_tree.json"))
    args = parser.parse_args()

    from radioactive._io import atomic_write_json, versions

    cache = Path(args.cache)
    src = cache / f"src-{args.images}"
    make_s = make_tree(src, args.images, args.classes, args.size)
    key = make_key(cache, args.classes, args.size)
    env = dict(os.environ, OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"), PYTHONPATH=str(REPO / "src"))
    source_bytes = sum(entry.stat().st_size for folder in src.iterdir() if folder.is_dir()
                       for entry in os.scandir(folder))
    report: dict = {
        "benchmark": "large_tree",
        "config": {"images": args.images, "classes": args.classes, "size": args.size, "fraction": args.fraction,
                   "steps": args.steps, "format": "grey PNG",
                   "source_mib": round(source_bytes / 2**20, 1)},
        "make_tree_s": round(make_s, 1),  # 0: the cached tree was reused
        "machine": {"cpu_count": os.cpu_count(), "machine": platform.machine(), "processor": platform.processor(),
                    "omp_num_threads": env["OMP_NUM_THREADS"]},
        "versions": versions(),
        "command": _shown([sys.executable, *sys.argv]),
    }

    def mark(out: Path, *extra: str, code_env: dict[str, str] = env) -> dict:
        return timed_run([sys.executable, "-m", "radioactive", "mark", "--key", str(key), "--data", str(src),
                          "--fraction", str(args.fraction), "--out", str(out), "--steps", str(args.steps),
                          "--device", "cpu", "--no-progress", *extra], env=code_env, timeout=args.timeout)

    def verify_only(out: Path, mode: str, code_env: dict[str, str] = env) -> dict:
        result = timed_run([sys.executable, "-c", VERIFY_ONLY, str(src), str(args.fraction), str(out), mode],
                           env=code_env, timeout=args.timeout)
        if result.get("returncode") == 0:
            result.update(json.loads(result["stdout"].strip().splitlines()[-1]))
        return result

    def phase(name: str, result: dict) -> None:
        report[name] = {k: v for k, v in result.items() if k not in ("stdout", "stderr") or result.get("returncode")}
        shown = {k: v for k, v in report[name].items() if k != "command"}
        print(f"{name}: {shown}", flush=True)

    listing = timed_run([sys.executable, "-c", LIST_AND_SELECT, str(src), str(args.fraction)], env=env,
                        timeout=args.timeout)
    listing.update(json.loads(listing["stdout"].strip().splitlines()[-1]) if listing.get("returncode") == 0 else {})
    phase("list_and_select", listing)
    for link in ("copy", "hardlink"):
        out = cache / f"out-{args.images}-{link}"
        if out.exists():
            subprocess.run(["rm", "-rf", str(out)], check=True)
        phase(f"mark_{link}", mark(out, "--link", link))
        phase(f"rerun_{link}", mark(out, "--link", link))
        phase(f"rerun_{link}_verify_full", mark(out, "--link", link, "--verify", "full"))
        phase(f"verify_only_{link}_stat", verify_only(out, "stat"))
    if args.baseline:
        base_env = dict(env, PYTHONPATH=str(Path(args.baseline).resolve()))
        listing = timed_run([sys.executable, "-c", LIST_AND_SELECT, str(src), str(args.fraction)], env=base_env,
                            timeout=args.timeout)
        if listing.get("returncode") == 0:
            listing.update(json.loads(listing["stdout"].strip().splitlines()[-1]))
        phase("baseline_list_and_select", listing)
        # the finished hardlink output, verified and rerun by the other code (it keeps it: the rows are the same)
        phase("baseline_verify_only_hardlink", verify_only(cache / f"out-{args.images}-hardlink", "default",
                                                           code_env=base_env))
        phase("baseline_rerun_hardlink", mark(cache / f"out-{args.images}-hardlink", "--link", "hardlink",
                                              code_env=base_env))
        commit = subprocess.run(["git", "-C", args.baseline, "rev-parse", "HEAD"], capture_output=True, text=True)
        report["baseline"] = {"src": args.baseline, "commit": commit.stdout.strip() or None}
    atomic_write_json(args.out, report)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
