#!/usr/bin/env bash
# Time the README's first command from a fresh clone, set-up included (a new .venv, pip installs from the
# local wheels), and record it in benchmarks/results/demo_fresh.json.
#   flock /tmp/radioactive-heavy.lock bash benchmarks/bench_demo_fresh.sh
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
git clone -q "$root" "$work/radioactive"
cd "$work/radioactive"
commit=$(git rev-parse HEAD)
start=$(date +%s.%N)
bash scripts/demo.sh --out runs/demo > "$work/demo.out" 2> "$work/demo.err"
end=$(date +%s.%N)
python3 - "$start" "$end" "$commit" "$work/demo.out" "$root/benchmarks/results/demo_fresh.json" runs/demo/report/demo.json <<'PY'
import json, os, sys, time
start, end, commit, out, target, demo = sys.argv[1:]
summary = json.load(open(demo))
record = {
    "benchmark": "demo-fresh-clone",
    "command": "git clone ... && bash scripts/demo.sh",
    "commit": commit,
    "wall_time_s": float(end) - float(start),
    "demo_seconds": summary["seconds"],
    "setup_seconds": float(end) - float(start) - summary["seconds"],
    "cpu_count": os.cpu_count(),
    "runs": {name: {"test_accuracy": run["test_accuracy"], "log10_p": run["log10_p"]} for name, run in summary["runs"].items()},
    "terminal": open(out).read(),
    "date": time.strftime("%Y-%m-%d %H:%M:%S"),
}
tmp = target + ".tmp"
json.dump(record, open(tmp, "w"), indent=2)
os.replace(tmp, target)
print(f"fresh clone: {record['wall_time_s']:.0f} s in all ({record['setup_seconds']:.0f} s set-up, {record['demo_seconds']:.0f} s demo)")
PY
