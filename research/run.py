"""One cached heavy step: `mark SPACE CFG` or `train ARCH FRACTION SEED [SPACE CFG EPOCHS]`."""

from __future__ import annotations

import json
import sys
import time

import common

if __name__ == "__main__":
    t0 = time.time()
    if sys.argv[1] == "mark":
        out = common.marked_train(sys.argv[2], sys.argv[3])
        print("marked", len(out["idx"]), "psnr min", float(out["psnr"].min()), "mean cos", float(out["cosine"].mean()),
              "seconds", out["seconds"])
    else:
        arch, frac, seed = sys.argv[2], float(sys.argv[3]), int(sys.argv[4])
        space = sys.argv[5] if len(sys.argv) > 5 else "full"
        cfg = sys.argv[6] if len(sys.argv) > 6 else "default"
        epochs = int(sys.argv[7]) if len(sys.argv) > 7 else 5
        _, metrics = common.suspect(arch, frac, seed, space, cfg, epochs)
        print(json.dumps(metrics))
    print(f"wall {time.time() - t0:.0f}s", flush=True)
