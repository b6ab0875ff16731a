"""Light check (no lock needed, ~10 s CPU): gradient white-box vs standard white-box on the demo's models."""
import sys
from pathlib import Path

import torch

torch.set_num_threads(1)
from radioactive import Key, Marker  # noqa: E402
from radioactive.detect.gradient import gradient_whitebox  # noqa: E402
from radioactive.detect.white_box import whitebox  # noqa: E402
from radioactive.nets import load_checkpoint  # noqa: E402
from radioactive.train import fashion_mnist_splits  # noqa: E402

out = Path(sys.argv[1])
n = int(sys.argv[2]) if len(sys.argv) > 2 else 500
marker = Marker.from_checkpoint(Path(__file__).resolve().parents[1] / "markers" / "fmnist-cnn.safetensors")
key = Key.load(out / "key.safetensors")
val = fashion_mnist_splits()["val"]
ref = (val[0][:n], val[1][:n])
for name in ("control", "suspect"):
    model, _, _ = load_checkpoint(out / "models" / f"{name}.safetensors")
    model.eval()
    wb = whitebox(model, key, ref[0], marker=marker)
    res = {"whitebox": round(wb.log10_p, 2)}
    for images_for in ("own", "all"):
        v = gradient_whitebox(model, key, ref, marker=marker, images_for=images_for)
        res[f"grad-{images_for}"] = (round(v.log10_p, 2), round(v.details["mean_cosine"], 3))
    print(name, res, flush=True)
