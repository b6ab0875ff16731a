"""Gradient white-box calibration on a clean model available now (the marker itself: never saw marks)."""
import json
import sys
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
for images_for in ("own", "all"):
    rows, _ = gradient_rows(m.model, m, x[:500], y[:500], pairs, images_for=images_for)
    lp = null_log10_ps(rows, key, pairs, int(sys.argv[1]) if len(sys.argv) > 1 else 2000, seed=7)
    out[f"marker-centred-{images_for}"] = fpr(lp)
    print(images_for, out[f"marker-centred-{images_for}"], np.median(lp), flush=True)
(common.RESULTS / "calibration-gradient-marker.json").write_text(json.dumps(out, indent=1))
print("seconds", time.time() - t0)
