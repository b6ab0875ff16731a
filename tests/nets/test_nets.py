"""Head resolution on many architectures, and safe loading of untrusted checkpoints."""


import pytest
import torch
import torchvision
from helpers.tiny import tiny_spec
from torch import nn

from radioactive.errors import HeadResolutionError, ModelLoadError
from radioactive.nets import (
    ARCHITECTURES,
    NetSpec,
    build_from_spec,
    load_checkpoint,
    load_state_dict_file,
    load_suspect,
    save_checkpoint,
    split_head,
    state_dict_sha256,
)


def _check_split(model: nn.Module, example: torch.Tensor, expected_name: str, expected_dim: int, **kwargs) -> None:
    model.eval()
    split = split_head(model, example, **kwargs)
    assert split.head_name == expected_name
    assert split.feature_dim == expected_dim
    with torch.no_grad():
        feats, logits = split.features_and_logits(example)
        torch.testing.assert_close(split.head(feats), logits, rtol=1e-4, atol=1e-4)
    assert feats.shape == (example.shape[0], expected_dim)


@pytest.mark.parametrize(
    "name,head,dim,size",
    [
        ("resnet18", "fc", 512, 64),
        ("vgg11", "classifier.6", 4096, 32),
        ("densenet121", "classifier", 1024, 32),
        ("mobilenet_v3_small", "classifier.3", 1024, 32),
        ("vit_b_16", "heads.head", 768, 224),
    ],
)
def test_torchvision_heads(name, head, dim, size):
    torch.manual_seed(0)
    kwargs = {"image_size": size} if name.startswith("vit") else {}
    if name == "vit_b_16":
        # A randomly initialised ViT has a zero head; give it weights so the logits check is meaningful.
        model = torchvision.models.get_model(name, weights=None, num_classes=7, **kwargs)
        nn.init.normal_(model.heads.head.weight, std=0.02)
        example = torch.rand(1, 3, size, size)
    else:
        model = torchvision.models.get_model(name, weights=None, num_classes=7, **kwargs)
        example = torch.rand(2, 3, size, size)
    _check_split(model, example, head, dim)


@pytest.mark.parametrize("arch", sorted(ARCHITECTURES))
def test_builtin_heads(arch):
    spec = NetSpec(arch, 10)
    model = build_from_spec(spec)
    expected = {"cnn": 128, "resnet_narrow": 64, "mlp": 256}[arch]
    _check_split(model, torch.rand(3, 1, 28, 28), "1.fc", expected)


@pytest.mark.parametrize("arch", sorted(ARCHITECTURES))
def test_builtin_archs_take_the_28_x_56_pairs(arch):
    """Fashion-MNIST pairs (28 x 56, 100 classes): every built-in runs on them; a square spec builds the network
    it always did (same parameter shapes and, from one seed, the same values)."""
    model = build_from_spec(NetSpec(arch, 100, input_size=(28, 56)))
    _check_split(model, torch.rand(2, 1, 28, 56), "1.fc", {"cnn": 128, "resnet_narrow": 64, "mlp": 256}[arch])
    torch.manual_seed(0)
    square = build_from_spec(NetSpec(arch, 10)).state_dict()
    torch.manual_seed(0)
    explicit = build_from_spec(NetSpec(arch, 10, kwargs={"input_size": 28} if arch == "mlp" else {})).state_dict()
    assert all(torch.equal(square[name], explicit[name]) for name in explicit) and square.keys() == explicit.keys()


class HeadDefinedFirst(nn.Module):
    """The classifier is defined before the body: a 'last module defined' rule would pick the wrong layer."""

    def __init__(self):
        super().__init__()
        self.classifier = nn.Linear(16, 5)
        self.body = nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 16), nn.ReLU())

    def forward(self, x):
        return self.classifier(self.body(x))


class SoftmaxAfterHead(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Flatten(), nn.Linear(64, 16), nn.ReLU())
        self.fc = nn.Linear(16, 5)

    def forward(self, x):
        return torch.log_softmax(self.fc(self.body(x)) * 3.0, dim=1)


def test_head_not_last_defined():
    _check_split(HeadDefinedFirst(), torch.rand(4, 1, 8, 8), "classifier", 16)


def test_explicit_head_and_wrong_names():
    model = HeadDefinedFirst()
    _check_split(model, torch.rand(4, 1, 8, 8), "classifier", 16, head="classifier")
    with pytest.raises(HeadResolutionError, match=r"no module named 'fc'.*linear layers are \['classifier', 'body.1', 'body.3'\]"):
        split_head(model, torch.rand(2, 1, 8, 8), head="fc")
    with pytest.raises(HeadResolutionError, match="is a ReLU, not nn.Linear"):
        split_head(model, torch.rand(2, 1, 8, 8), head="body.2")
    with pytest.raises(HeadResolutionError, match="does not reproduce the model's logits"):
        split_head(model, torch.rand(2, 1, 8, 8), head="body.3")


def test_layer_after_head_is_detected():
    with pytest.raises(HeadResolutionError, match="pass head="):
        split_head(SoftmaxAfterHead(), torch.rand(2, 1, 8, 8))


def test_no_linear_layer():
    model = nn.Sequential(nn.Conv2d(1, 3, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    with pytest.raises(HeadResolutionError, match="runs no nn.Linear"):
        split_head(model, torch.rand(2, 1, 8, 8))


def test_split_restores_training_mode():
    model = build_from_spec(NetSpec("cnn", 10))
    model.train()
    split_head(model, torch.rand(2, 1, 28, 28))
    assert model.training


class Payload:
    """Unpickling this object writes a file: the proof that code from a checkpoint ran."""

    def __init__(self, target: str):
        self.target = target

    def __reduce__(self):
        return (open, (self.target, "w"))


def test_pickle_payload_is_refused_and_never_runs(tmp_path):
    target = tmp_path / "pwned"
    evil = tmp_path / "evil.pt"
    torch.save({"fc.weight": torch.zeros(2, 2), "payload": Payload(str(target))}, evil)
    assert not target.exists()
    with pytest.raises(ModelLoadError, match="cannot be loaded safely"):
        load_state_dict_file(evil)
    with pytest.raises(ModelLoadError):
        load_suspect(evil, arch="cnn", num_classes=10)
    with pytest.raises(ModelLoadError):
        load_checkpoint(evil, NetSpec("cnn", 10))
    assert not target.exists()
    # A whole pickled module is refused too.
    whole = tmp_path / "whole.pt"
    torch.save(build_from_spec(NetSpec("mlp", 10)), whole)
    with pytest.raises(ModelLoadError, match="cannot be loaded safely"):
        load_state_dict_file(whole)


def test_detect_cli_refuses_pickle_before_anything_runs(tmp_path, tiny_marker_file):
    from radioactive.cli import main
    from radioactive.key import Key

    key = Key.generate(tiny_marker_file[0].info, seed=0)
    key.save(tmp_path / "key.safetensors")
    target = tmp_path / "pwned"
    torch.save({"payload": Payload(str(target))}, tmp_path / "evil.pt")
    code = main(["detect", "--key", str(tmp_path / "key.safetensors"), "--marker", str(tmp_path / "marker.safetensors"),
                 "--model", str(tmp_path / "evil.pt"), "--arch", "cnn", "--reference", str(tmp_path)])
    assert code == 2
    assert not target.exists()


def test_state_dict_prefixes_and_roundtrip(tmp_path):
    spec = NetSpec("mlp", 10)
    model = build_from_spec(spec)
    wrapped = {f"module.{k}": v for k, v in model[1].state_dict().items()}
    torch.save(wrapped, tmp_path / "sd.pt")
    loaded = load_suspect(tmp_path / "sd.pt", arch="mlp", num_classes=10)
    x = torch.rand(2, 1, 28, 28)
    with torch.no_grad():
        torch.testing.assert_close(loaded[1](loaded[0](x)), model[1](loaded[0](x)))
    digest = save_checkpoint(model, tmp_path / "m.safetensors", spec)
    again, spec_again, _ = load_checkpoint(tmp_path / "m.safetensors")
    assert spec_again == spec and digest == state_dict_sha256(model.state_dict())
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), again.state_dict().values(), strict=True))


def test_torch_export_archive(tmp_path):
    from radioactive.detect import whitebox
    from radioactive.key import Key
    from radioactive.marker import Marker

    spec = NetSpec("mlp", 10)
    model = build_from_spec(spec).eval()
    program = torch.export.export(model, (torch.rand(2, 1, 28, 28),))
    torch.export.save(program, str(tmp_path / "m.pt2"))
    loaded = load_suspect(tmp_path / "m.pt2")
    loaded.eval()
    x = torch.rand(2, 1, 28, 28)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model(x))
    marker = Marker.from_model(model, spec)
    with pytest.raises(HeadResolutionError, match="torch.export archive has no layers"):
        whitebox(loaded, Key.generate(marker.info, seed=0), x, marker=marker)


def test_torchscript_suspect_loads_for_black_box(tmp_path):
    model = build_from_spec(tiny_spec(4, 16)).eval()
    scripted = torch.jit.script(model)
    path = tmp_path / "suspect.pt"
    torch.jit.save(scripted, str(path))
    loaded = load_suspect(path).eval()
    x = torch.rand(3, 1, 16, 16, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model(x))
    torch.save(model.state_dict(), tmp_path / "plain.pt")  # a plain state dict zip is not TorchScript
    from radioactive.nets import is_torchscript

    assert not is_torchscript(tmp_path / "plain.pt") and is_torchscript(path)
