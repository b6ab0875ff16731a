"""Untrusted suspect checkpoints: pickle payloads never run; wrong keys, shapes, dtypes get explanations."""

from __future__ import annotations

import io
import pickle
import zipfile

import pytest
import torch
from safetensors.torch import save_file

from radioactive.errors import ModelLoadError
from radioactive.nets import (
    NetSpec,
    build_from_spec,
    load_checkpoint,
    load_state_dict_file,
    load_suspect,
    save_checkpoint,
)


class _Payload:
    """Unpickling this creates a file: proof that code from the file ran."""

    def __init__(self, target: str):
        self.target = target

    def __reduce__(self):
        return (open, (self.target, "w"))


def _spec() -> NetSpec:
    return NetSpec("mlp", 3, in_channels=1, input_size=(8, 8))


def _state() -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in build_from_spec(_spec())[1].state_dict().items()}


@pytest.mark.parametrize("suffix", [".pt", ".pth", ".bin", ".safetensors", ""])
def test_torch_save_pickle_payload_never_runs(tmp_path, suffix):
    target = tmp_path / "pwned"
    path = tmp_path / f"suspect{suffix}"
    torch.save({"fc.weight": torch.zeros(2, 2), "evil": _Payload(str(target))}, path)
    with pytest.raises(ModelLoadError, match="refused|not a valid safetensors"):
        load_state_dict_file(path)
    with pytest.raises(ModelLoadError):
        load_suspect(path, arch="mlp", num_classes=3)
    assert not target.exists()


@pytest.mark.parametrize("protocol", [0, 2, 5])
def test_raw_pickle_payload_never_runs(tmp_path, protocol):
    target = tmp_path / "pwned"
    path = tmp_path / "suspect.pkl"
    path.write_bytes(pickle.dumps({"w": _Payload(str(target))}, protocol=protocol))
    with pytest.raises(ModelLoadError):
        load_state_dict_file(path)
    assert not target.exists()


def _export_archive(tmp_path) -> bytes:
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 3))
    program = torch.export.export(model, (torch.rand(2, 1, 2, 2),))
    path = tmp_path / "clean.pt2"
    torch.export.save(program, str(path))
    return path.read_bytes()


def _rewrite(data: bytes, replace) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(data)) as src, zipfile.ZipFile(out, "w") as dst:
        for name in src.namelist():
            dst.writestr(name, replace(name, src.read(name)))
    return out.getvalue()


def test_export_archive_with_pickle_payload_never_runs(tmp_path):
    clean = _export_archive(tmp_path)
    good = tmp_path / "good.pt2"
    good.write_bytes(clean)
    assert load_suspect(good)(torch.rand(2, 1, 2, 2)).shape == (2, 3)

    target = tmp_path / "pwned"
    buffer = io.BytesIO()
    torch.save({"x": _Payload(str(target))}, buffer)
    # torch.export.load itself falls back to weights_only=False for sample inputs: the payload would run.
    bad = tmp_path / "bad.pt2"
    bad.write_bytes(_rewrite(clean, lambda name, blob: buffer.getvalue() if name.endswith(".pt") else blob))
    with pytest.raises(ModelLoadError, match="pickled code is refused"):
        load_suspect(bad)
    assert not target.exists()

    opaque = tmp_path / "opaque.pt2"
    with zipfile.ZipFile(opaque, "w") as archive:
        archive.writestr("m/data/constants/opaque_obj_0", pickle.dumps(_Payload(str(target))))
    with pytest.raises(ModelLoadError, match="pickled"):
        load_suspect(opaque)
    assert not target.exists()

    notzip = tmp_path / "notzip.pt2"
    notzip.write_bytes(b"\x80\x04junk")
    with pytest.raises(ModelLoadError, match="not a torch.export archive"):
        load_suspect(notzip)


def _write_weights(path, state):
    save_file({k: v.contiguous() for k, v in state.items()}, str(path))


def test_unexpected_missing_keys_are_explained(tmp_path):
    state = _state()
    state["extra.weight"] = torch.zeros(3)
    del state[next(iter(state))]
    _write_weights(tmp_path / "w.safetensors", state)
    with pytest.raises(ModelLoadError, match=r"missing 1 tensors.*unexpected 1 tensors.*architecture name"):
        load_checkpoint(tmp_path / "w.safetensors", _spec())


def test_wrong_shapes_are_explained(tmp_path):
    state = _state()
    name = next(k for k in state if k.endswith("weight"))
    state[name] = torch.zeros(*[s + 1 for s in state[name].shape])
    _write_weights(tmp_path / "w.safetensors", state)
    with pytest.raises(ModelLoadError, match=rf"{name}: shape .* but the architecture needs"):
        load_suspect(tmp_path / "w.safetensors", arch="mlp", num_classes=3, spec=_spec())
    with pytest.raises(ModelLoadError, match="do not fit the architecture"):
        load_suspect(tmp_path / "w.safetensors", spec=NetSpec("mlp", 7, in_channels=1, input_size=(8, 8)))


@pytest.mark.parametrize("dtype", [torch.int64, torch.bool, torch.uint8, torch.complex64])
def test_wrong_dtypes_are_explained(tmp_path, dtype):
    state = _state()
    name = next(k for k in state if k.endswith("weight"))
    state[name] = torch.zeros(state[name].shape, dtype=dtype)
    torch.save(state, tmp_path / "w.pt")
    with pytest.raises(ModelLoadError, match=rf"{name}: dtype"):
        load_checkpoint(tmp_path / "w.pt", _spec())


def test_non_tensor_and_garbage_files_are_explained(tmp_path):
    torch.save({"weight": [1, 2, 3]}, tmp_path / "list.pt")
    with pytest.raises(ModelLoadError, match="state dict of tensors"):
        load_state_dict_file(tmp_path / "list.pt")
    (tmp_path / "empty.pt").write_bytes(b"")
    with pytest.raises(ModelLoadError):
        load_state_dict_file(tmp_path / "empty.pt")
    (tmp_path / "junk.safetensors").write_bytes(b"\xff" * 64)
    with pytest.raises(ModelLoadError, match="not a valid safetensors"):
        load_state_dict_file(tmp_path / "junk.safetensors")
    with pytest.raises(ModelLoadError, match="does not exist"):
        load_state_dict_file(tmp_path / "missing.pt")


def test_checkpoint_with_tampered_spec_header_is_explained(tmp_path):
    model = build_from_spec(_spec())
    save_checkpoint(model, tmp_path / "c.safetensors", _spec())
    data = (tmp_path / "c.safetensors").read_bytes()
    # Break the JSON spec in the header while keeping the header length.
    bad = data.replace(b'\\"arch\\": \\"mlp\\"', b'\\"arch\\": \\"zzz\\"', 1)
    assert bad != data
    (tmp_path / "bad.safetensors").write_bytes(bad)
    with pytest.raises((ModelLoadError, ValueError), match="unknown architecture|zzz"):
        load_checkpoint(tmp_path / "bad.safetensors")
