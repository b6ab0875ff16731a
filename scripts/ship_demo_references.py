"""Train (or take from a demo's cache) the demo's clean reference models and its clean control, and ship them as
package data.

    .venv/bin/python scripts/ship_demo_references.py [--out runs/demo]

The demo's black-box test subtracts the response of clean reference models trained like its suspect (the
auditor's own models: clean images only, independent of every key). The experiment cache names each by a
hash of its architecture, recipe, seed and training data; :func:`radioactive.zoo.shipped_model` finds a
shipped file under that same name, so a shipped model is used only where it is exactly what the demo would
otherwise train (another --epochs or --train-images trains its own). The demo's clean control (trained like the
suspect on the clean images, with its own training seed) is as independent of every key, and is shipped the same
way for the default seed (:meth:`radioactive.experiment.Context.clean_model`). This script runs the demo's context
with its default settings, trains whatever is missing from ``OUT/cache`` and copies the files into
``src/radioactive/references/``, with a README row per model.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(ROOT / "runs" / "demo"), help="the demo's output folder (its cache)")
    args = parser.parse_args()

    from radioactive.demo import demo_config
    from radioactive.experiment import Context, derive_seed
    from radioactive.nets import load_checkpoint, state_dict_sha256
    from radioactive.train import fit

    config = demo_config()
    context = Context(config, args.out)
    context.reference_models()  # trains what the cache lacks
    setting, seed = config.models[0], derive_seed("control_training", config.seeds[0])
    start_point, _ = context.start_point(setting)
    images, labels = context.data["owner"]
    context.clean_model(setting, seed, lambda: fit(start_point, images, labels, recipe=config.recipe(setting), seed=seed,
                                                   test=context.data["test"], num_classes=context.num_classes))
    target = ROOT / "src" / "radioactive" / "references"
    target.mkdir(parents=True, exist_ok=True)
    for stale in [*target.glob("reference-*.safetensors"), *target.glob("clean-*.safetensors")]:  # earlier settings
        stale.unlink()
    rows = []
    control = Path(context.cache) / context.clean_model_name(setting, seed)  # the default seed's only
    for path in [*sorted(Path(context.cache).glob("reference-*.safetensors")), control]:
        model, spec, extra = load_checkpoint(path)
        shutil.copyfile(path, target / path.name)
        metrics = extra.get("metrics", {})
        role = "clean control" if path.name.startswith("clean-") else "reference"
        rows.append(f"| `{path.name}` | {role} | {spec.arch} | {extra.get('seed', 'single-reference seed')} | "
                    f"{100 * metrics.get('test_accuracy', float('nan')):.2f} % | "
                    f"`{state_dict_sha256(model.state_dict())[:16]}` |")
    images_text = (f"a fixed subset of {config.train_images:,} of the 55k owner split" if config.train_images
                   else f"the whole owner split, {len(labels):,} images")
    readme = target / "README.md"
    readme.write_text(
        "# Shipped clean models of the demo (package data)\n\n"
        "The demo's auditor subtracts the response of the clean references (difference in differences); the clean\n"
        "control is the demo's model trained without marked data. Each is the\n"
        f"built-in `cnn` trained by `radioactive.train.fit` on the demo's clean training images ({images_text}) with the\n"
        "demo's recipe, one seed each: models independent of every key. The file\n"
        "name is the hash the experiment cache gives the same model, so the demo uses them only at its default\n"
        "settings. Regenerate with `.venv/bin/python scripts/ship_demo_references.py`.\n\n"
        f"Recipe: `{json.dumps(config.train)}` on top of `radioactive.train.TrainRecipe`'s defaults.\n\n"
        "| file | role | arch | seed | test accuracy | weights sha256 (first 16) |\n|---|---|---|---|---|---|\n"
        + "\n".join(rows) + "\n"
    )
    print(f"shipped {len(rows)} clean models into {target}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
