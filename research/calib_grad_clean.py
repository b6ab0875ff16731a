"""Gradient white-box calibration on the cached clean resnet_narrow suspects (light: 500 reference images)."""
import json
import time

import common
import numpy as np
from calibrate import fpr

from radioactive.detect.gradient import gradient_rows, null_log10_ps

t0 = time.time()
m = common.marker()
key = common.key("full", m)
x, y = common.splits()["val"]
pairs = tuple((k, k) for k in range(10))
out = {}
pooled = []
for seed in (0, 100):
    model, _ = common.suspect("resnet_narrow", 0.0, seed, epochs=3)
    rows, _ = gradient_rows(model, m, x[:500], y[:500], pairs, images_for="all")
    lp = null_log10_ps(rows, key, pairs, 2000, seed=11 + seed)
    pooled.extend(lp.tolist())
    out[f"resnet_narrow-clean-s{seed}-centred-all"] = fpr(lp)
    print(seed, out[f"resnet_narrow-clean-s{seed}-centred-all"], np.median(lp), flush=True)
out["pooled"] = fpr(pooled)
print("pooled", out["pooled"])
(common.RESULTS / "calibration-gradient-clean-resnet.json").write_text(json.dumps(out, indent=1))
print("seconds", time.time() - t0)
