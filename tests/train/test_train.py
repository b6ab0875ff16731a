import pytest
import torch
from helpers.tiny import quadrant_images, tiny_spec

from radioactive.errors import ConfigError
from radioactive.nets import NetSpec, load_checkpoint, save_checkpoint
from radioactive.train import (
    TrainRecipe,
    augment_batch,
    dataset_fingerprint,
    evaluate,
    fit,
    train_classifier,
)
from radioactive.train.recipe import lr_factor

SPEC = tiny_spec(4, 16)
FAST = TrainRecipe(epochs=2, batch_size=32, lr=0.05, flip=False)  # flips would swap the toy classes


def toy_data(num: int = 128, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Four classes: a bright 6x6 square in one of the four quadrants, on noise. uint8 (N, 1, 16, 16)."""
    return quadrant_images(num, torch.Generator().manual_seed(seed), brightness=0.7)


def test_scratch_learns_toy_task_and_reports_metrics():
    images, labels = toy_data(256)
    result = fit(SPEC, images, labels, recipe=TrainRecipe(epochs=4, batch_size=32, lr=0.1, flip=False),
                 seed=0, test=toy_data(128, seed=1))
    assert result.metrics["test_accuracy"] >= 0.9
    assert result.metrics["epochs"] == 4 and len(result.metrics["history"]) == 4
    assert result.metrics["steps"] == 4 * 8
    assert not result.model.training
    assert result.spec == SPEC


def test_bfloat16_mixed_precision_learns_in_float32_weights_and_keeps_old_recipe_dicts():
    images, labels = toy_data(256)
    recipe = TrainRecipe(epochs=4, batch_size=32, lr=0.1, flip=False, precision="bfloat16")
    mixed = fit(SPEC, images, labels, recipe=recipe, seed=0, test=toy_data(128, seed=1))
    plain = fit(SPEC, images, labels, recipe=TrainRecipe(epochs=4, batch_size=32, lr=0.1, flip=False), seed=0)
    assert mixed.metrics["test_accuracy"] >= 0.9  # as the float32 recipe above
    weights = [p for p in mixed.model.parameters()]
    assert all(p.dtype == torch.float32 for p in weights)
    # The forward passes really ran in bfloat16: same seed and data, other weights.
    assert any(not torch.equal(a, b) for a, b in zip(weights, plain.model.parameters()))
    # A float32 recipe's dict is what it was before the field existed (run ids and cache names hash it) ...
    assert "precision" not in TrainRecipe().to_dict()
    assert TrainRecipe.from_dict(recipe.to_dict()) == recipe and recipe.to_dict()["precision"] == "bfloat16"
    with pytest.raises(ConfigError, match="unknown precision 'float16'"):
        TrainRecipe(precision="float16")

def test_seeded_and_leaves_global_rng_alone():
    images, labels = toy_data(64)
    state = torch.random.get_rng_state()
    first = train_classifier(SPEC, images, labels, recipe=FAST, seed=3)
    assert torch.equal(torch.random.get_rng_state(), state)
    again = train_classifier(SPEC, images, labels, recipe=FAST, seed=3)
    other = train_classifier(SPEC, images, labels, recipe=FAST, seed=4)
    for (name, a), (_, b) in zip(first.state_dict().items(), again.state_dict().items()):
        assert torch.equal(a, b), name
    assert any(not torch.equal(a, c) for a, c in zip(first.state_dict().values(), other.state_dict().values()))


def test_linear_probe_only_trains_a_fresh_head():
    images, labels = toy_data(64)
    base = train_classifier(SPEC, images, labels, recipe=FAST, seed=0)
    before = {k: v.clone() for k, v in base.state_dict().items()}
    probe = fit(base, images, labels, recipe=TrainRecipe(mode="linear_probe", epochs=1, batch_size=32), seed=1)
    after = probe.model.state_dict()
    for name, value in before.items():
        assert torch.equal(base.state_dict()[name], value), "the given model must not be modified"
        if name.startswith("1.fc."):
            assert not torch.equal(after[name], value)
        else:
            assert torch.equal(after[name], value), name  # frozen weights and batch-norm statistics


def test_finetune_replaces_a_head_of_the_wrong_size():
    images, labels = toy_data(64)
    base = train_classifier(SPEC, images, labels, recipe=FAST, seed=0)
    two = (labels >= 2).long()
    tuned = train_classifier(base, images, two, recipe=TrainRecipe(mode="finetune", epochs=1, batch_size=32),
                             num_classes=2)
    assert tuned(images[:3].float() / 255).shape == (3, 2)
    assert base(images[:3].float() / 255).shape == (3, 4)


def test_distillation_student_follows_teacher():
    images, labels = toy_data(256)
    teacher = train_classifier(SPEC, images, labels, recipe=TrainRecipe(epochs=4, batch_size=32, lr=0.1, flip=False),
                               seed=0)
    student_spec = NetSpec("resnet_narrow", 4, input_size=(16, 16), kwargs={"width": 4})
    shuffled = labels[torch.randperm(len(labels), generator=torch.Generator().manual_seed(0))]
    result = fit(student_spec, images, shuffled, teacher=teacher, seed=0, test=toy_data(128, seed=1),
                 recipe=TrainRecipe(mode="distill", epochs=4, batch_size=32, lr=0.1, flip=False))
    # The labels given are shuffled: only the teacher's outputs can teach the student the task.
    assert result.metrics["test_accuracy"] >= 0.8


def test_bad_inputs():
    images, labels = toy_data(32)
    with pytest.raises(ValueError, match="expected images"):
        fit(SPEC, images, labels[:5])
    with pytest.raises(ConfigError, match="needs a teacher"):
        fit(SPEC, images, labels, recipe=TrainRecipe(mode="distill"))
    with pytest.raises(ConfigError, match="needs a trained network"):
        fit(SPEC, images, labels, recipe=TrainRecipe(mode="linear_probe"))
    with pytest.raises(ConfigError, match="unknown training mode 'scratchh'; choose from"):
        TrainRecipe(mode="scratchh")
    with pytest.raises(ConfigError, match="unknown schedule"):
        TrainRecipe(schedule="linear")
    with pytest.raises(ConfigError, match="unknown recipe fields"):
        TrainRecipe.from_dict({"epoch": 3})
    with pytest.raises(ValueError, match="labels must lie in"):
        fit(SPEC, images, labels + 4)


def test_augment_batch_shapes_identity_and_flip():
    x = torch.rand(8, 3, 10, 12)
    assert torch.equal(augment_batch(x, padding=0, flip=False), x)
    out = augment_batch(x, padding=3, flip=True, generator=torch.Generator().manual_seed(0))
    assert out.shape == x.shape
    # Every output is a shifted (possibly flipped) copy: its non-zero mass comes from the input.
    assert float(out.sum()) <= float(x.sum()) + 1e-4
    flipped = augment_batch(x, padding=0, flip=True, generator=torch.Generator().manual_seed(1))
    for i in range(8):
        assert torch.equal(flipped[i], x[i]) or torch.equal(flipped[i], x[i].flip(-1))


def test_schedules():
    cosine = TrainRecipe(schedule="cosine")
    assert lr_factor(cosine, 0, 100, 10) == pytest.approx(1.0)
    assert lr_factor(cosine, 50, 100, 10) == pytest.approx(0.5)
    step = TrainRecipe(schedule="step", step_epochs=2, gamma=0.1)
    assert lr_factor(step, 19, 100, 10) == pytest.approx(1.0)
    assert lr_factor(step, 20, 100, 10) == pytest.approx(0.1)
    warm = TrainRecipe(warmup_epochs=1.0)
    assert lr_factor(warm, 4, 100, 10) == pytest.approx(0.5)


def test_checkpoint_roundtrip_and_fingerprint(tmp_path):
    images, labels = toy_data(64)
    result = fit(SPEC, images, labels, recipe=FAST, seed=0)
    extra = {"recipe": result.recipe.to_dict(), "dataset_fingerprint": dataset_fingerprint(images, labels)}
    save_checkpoint(result.model, tmp_path / "m.safetensors", SPEC, extra)
    loaded, spec, got = load_checkpoint(tmp_path / "m.safetensors")
    x = images[:4].float() / 255
    torch.testing.assert_close(loaded(x), result.model(x))
    assert spec == SPEC and got["recipe"]["epochs"] == 2
    assert TrainRecipe.from_dict(got["recipe"]) == result.recipe
    changed = images.clone()
    changed[0, 0, 0, 0] ^= 1
    assert dataset_fingerprint(changed, labels) != extra["dataset_fingerprint"]
    assert dataset_fingerprint(images.float() / 255, labels) == extra["dataset_fingerprint"]


def test_evaluate_restores_mode():
    images, labels = toy_data(32)
    model = train_classifier(SPEC, images, labels, recipe=FAST)
    model.train()
    scores = evaluate(model, images, labels, batch_size=7)
    assert model.training
    with torch.no_grad():  # the same numbers in one eval-mode batch (5 uneven batches of 7 above)
        logits = model.eval()(images.float() / 255)
    assert scores["accuracy"] == pytest.approx((logits.argmax(1) == labels).double().mean().item(), abs=1e-12)
    assert scores["loss"] == pytest.approx(torch.nn.functional.cross_entropy(logits, labels).item(), rel=1e-5)


def test_finetune_unfreezes_a_frozen_network():
    images, labels = toy_data(64)
    base = train_classifier(SPEC, images, labels, recipe=FAST, seed=0)
    for param in base.parameters():
        param.requires_grad_(False)
    tuned = train_classifier(base, images, labels, recipe=TrainRecipe(mode="finetune", epochs=1, batch_size=32))
    changed = [not torch.equal(a, b) for a, b in zip(base.parameters(), tuned.parameters())]
    assert all(changed)
    assert not any(p.requires_grad for p in base.parameters())


def _write_tree(root, num_per_class=6, size=16, manifest=False):
    import json as _json

    from PIL import Image

    gen = torch.Generator().manual_seed(0)
    rows = []
    for label, name in enumerate(["cat", "dog"]):
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(num_per_class):
            array = (torch.rand(size, size, generator=gen) * 100 + 120 * label).to(torch.uint8).numpy()
            Image.fromarray(array).save(root / name / f"{i}.png")
            rows.append({"source": f"{name}/{i}.png", "output": f"{name}/{i}.png", "label": label, "marked": i == 0})
    if manifest:
        rows.append({"source": "cat/broken.png", "output": None, "label": 0, "marked": False, "bad": True,
                     "error": "cannot decode"})
        (root / "manifest.jsonl").write_text("".join(_json.dumps(r) + "\n" for r in rows))


def test_cli_train_on_a_class_tree_and_a_manifest(tmp_path):
    from radioactive.cli import main
    from radioactive.sources import load_labelled

    _write_tree(tmp_path / "tree")
    data = load_labelled(str(tmp_path / "tree"))
    images, labels, ids = data.images, data.labels, data.ids
    assert images.shape == (12, 1, 16, 16) and images.dtype == torch.uint8 and data.classes == ["cat", "dog"]
    assert labels.tolist() == [0] * 6 + [1] * 6 and ids[0] == "cat/0.png" and not data.marked
    _write_tree(tmp_path / "published", manifest=True)
    again = load_labelled(str(tmp_path / "published"), size=8)
    assert again.images.shape == (12, 1, 8, 8) and again.labels.tolist() == labels.tolist() and again.marked
    out = tmp_path / "suspect.safetensors"
    code = main(["train", "--data", str(tmp_path / "published"), "--test", str(tmp_path / "tree"), "--out", str(out),
                 "--arch", "resnet_narrow", "--epochs", "1", "--batch-size", "4", "--device", "cpu"])
    assert code == 0
    model, spec, extra = load_checkpoint(out)
    assert spec.arch == "resnet_narrow" and extra["recipe"]["mode"] == "scratch"
    # The recorded accuracy is the saved model's on the --test tree.
    assert extra["test_accuracy"] == pytest.approx(evaluate(model, images, labels)["accuracy"], abs=1e-12)
    tuned = tmp_path / "tuned.safetensors"
    assert main(["train", "--data", str(tmp_path / "tree"), "--out", str(tuned), "--mode", "linear_probe",
                 "--init", str(out), "--epochs", "1", "--device", "cpu"]) == 0
    assert load_checkpoint(tuned)[2]["init"] == str(out)
    assert "precision" not in load_checkpoint(tuned)[2]["recipe"]  # float32, the default
    assert main(["train", "--data", str(tmp_path / "tree"), "--out", str(tuned), "--epochs", "1",
                 "--precision", "bfloat16", "--device", "cpu"]) == 0
    assert load_checkpoint(tuned)[2]["recipe"]["precision"] == "bfloat16"
    assert main(["train", "--data", str(tmp_path / "tree"), "--out", str(tuned), "--mode", "finetune",
                 "--device", "cpu"]) == 2  # needs --init: a clean error, exit status 2
