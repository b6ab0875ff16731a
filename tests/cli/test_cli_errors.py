"""Every subcommand fed bad arguments: exit status 2 and one paragraph on stderr that names what is wrong,
never a traceback (issue 9, defect 7).

In-process through ``radioactive.cli.main`` (fast: every case fails before any marking or training), plus a
few real ``python -m radioactive`` processes to show that nothing else reaches the terminal. Exit status 1
stays for bugs (an unexpected exception: traceback and how to report it), 130 for an interrupt.
"""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from helpers.tiny import save_tiny_marker, tiny_spec
from PIL import Image

from radioactive.cli import main
from radioactive.errors import ModelLoadError

# ----------------------------------------------------------------------------------------------------------
# Files the cases point at (built once): a tiny 10-class marker for 28 x 28 grey images, a key made for it,
# a uniform 28 x 28 class tree, and one broken file of each kind a user may hand over.


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli-errors")
    marker = save_tiny_marker(root / "marker.safetensors", tiny_spec(10, feature_dim=16))
    assert main(["keygen", "--marker", str(marker), "--out", str(root / "key.safetensors"), "--seed", "1"]) == 0
    rng = np.random.default_rng(0)
    for label in range(10):
        (root / "ref" / f"c{label}").mkdir(parents=True)
        for i in range(2):
            Image.fromarray(rng.integers(0, 256, (28, 28), dtype=np.uint8)).save(root / "ref" / f"c{label}" / f"{i}.png")
    (root / "folder").mkdir()
    (root / "corrupt.safetensors").write_bytes(b"this is not a safetensors file")
    (root / "corrupt.safetensors").chmod(0o600)  # as keys are: no permission warning in the way
    (root / "junk.pt").write_bytes(b"\x80\x04junk that torch.load cannot read")
    (root / "notes.txt").write_text("path,label\n")
    (root / "bad.json").write_text("{not json")
    (root / "list.json").write_text("[1, 2]")
    (root / "unknown.json").write_text('{"epochs": 1, "bogus_field": 3}')
    (root / "bad.toml").write_text("name = [\n")
    (root / "unknown.toml").write_text('name = "t"\nbogus_setting = 1\n')
    (root / "arch.toml").write_text('name = "t"\n[[models]]\nmode = "scratch"\narch = "nonexistent_net"\n')
    (root / "plain.file").write_text("a file where a folder is expected\n")
    return root


def _expand(args, world, fresh):
    names = {"root": world, "key": world / "key.safetensors", "marker": world / "marker.safetensors",
             "ref": world / "ref", "fresh": fresh}
    return [arg.format(**names) for arg in args]


def assert_one_paragraph_error(err: str, prog: str, names: str) -> None:
    """``err`` ends with one ``PROG: error: ...`` line naming ``names``; no traceback, no second paragraph
    (lines logged before the error, such as progress, may precede it without a blank line)."""
    assert "Traceback" not in err, err
    lines = err.strip("\n").splitlines()
    assert lines and all(line.strip() for line in lines), f"blank line in stderr:\n{err}"
    assert lines[-1].startswith(f"{prog}: error: "), err
    assert sum(": error: " in line for line in lines) == 1, err
    assert names in lines[-1], f"{names!r} not named in: {lines[-1]}"


KEY, MARKER, REF = "{key}", "{marker}", "{ref}"
OUT = "{fresh}/out"
TRAIN = ["--data", REF, "--out", "{fresh}/m.safetensors"]  # valid arguments the cases add one bad one to
MARK = ["--key", KEY, "--data", REF, "--fraction", "0.5", "--out", OUT]
WHITE = ["--key", KEY, "--model", MARKER, "--reference", REF]
BLACK = ["--key", KEY, "--black-box", "--model", MARKER]

# (command, arguments, text the message must contain: the offending argument, file or value)
CASES = [
    # train-marker
    ("train-marker", ["--out", "{fresh}/marker.pt"], "marker.pt"),
    ("train-marker", ["--out", "{root}/folder"], "folder"),
    ("train-marker", ["--out", "{fresh}/m.safetensors", "--epochs", "-1"], "epochs"),
    ("train-marker", ["--out", "{fresh}/m.safetensors", "--batch-size", "0"], "batch_size"),
    ("train-marker", ["--out", "{fresh}/m.safetensors", "--device", "quantum"], "quantum"),
    ("train-marker", ["--out", "{fresh}/m.safetensors", "--data", "cifar"], "--data"),
    ("train-marker", ["--out", "{fresh}/m.safetensors", "--epochs", "two"], "--epochs"),
    ("train-marker", [], "--out"),
    # keygen
    ("keygen", ["--out", KEY, "--marker", MARKER], "key.safetensors"),
    ("keygen", ["--out", "{fresh}/k", "--marker", "{root}/missing.safetensors"], "missing.safetensors"),
    ("keygen", ["--out", "{fresh}/k", "--marker", "{root}/corrupt.safetensors"], "corrupt.safetensors"),
    ("keygen", ["--out", "{fresh}/k", "--marker", "{root}/junk.pt"], "junk.pt"),
    ("keygen", ["--out", "{fresh}/k", "--marker", "{root}/folder"], "folder"),
    ("keygen", ["--out", "{fresh}/k", "--marker", "torchvision:nonexistent_net"], "nonexistent_net"),
    ("keygen", ["--out", "{fresh}/k", "--marker", MARKER, "--marker-weights", "{root}/junk.pt"], "junk.pt"),
    ("keygen", ["--out", "{fresh}/k", "--marker", MARKER, "--seed", "abc"], "--seed"),
    ("keygen", ["--out", "{fresh}/k", "--marker", MARKER, "--space", "sideways"], "--space"),
    ("keygen", ["--marker", MARKER], "--out"),
    # mark
    ("mark", ["--key", "{root}/missing.safetensors", "--data", REF, "--fraction", "0.5", "--out", OUT],
     "missing.safetensors"),
    ("mark", ["--key", "{root}/corrupt.safetensors", "--data", REF, "--fraction", "0.5", "--out", OUT],
     "corrupt.safetensors"),
    ("mark", ["--key", "{root}/folder", "--data", REF, "--fraction", "0.5", "--out", OUT], "folder"),
    ("mark", ["--key", KEY, "--data", "{root}/nowhere", "--fraction", "0.5", "--out", OUT], "nowhere"),
    ("mark", ["--key", KEY, "--data", "{root}/notes.txt", "--fraction", "0.5", "--out", OUT], "notes.txt"),
    ("mark", ["--key", KEY, "--data", "fashion-mnist:train", "--fraction", "0.5", "--out", OUT], "fashion-mnist:train"),
    ("mark", ["--key", KEY, "--data", REF, "--fraction", "1.5", "--out", OUT], "1.5"),
    ("mark", ["--key", KEY, "--data", REF, "--fraction", "half", "--out", OUT], "--fraction"),
    ("mark", [*MARK, "--epsilon", "1/0"], "--epsilon"),
    ("mark", [*MARK, "--epsilon", "-2"], "epsilon"),
    ("mark", [*MARK, "--augment", "warp"], "warp"),
    ("mark", [*MARK, "--classes", "zebra"], "zebra"),
    ("mark", [*MARK, "--batch-size", "0"], "--batch-size"),
    ("mark", [*MARK, "--lr", "-1"], "lr"),
    ("mark", [*MARK, "--min-psnr", "500"], "500"),
    ("mark", [*MARK, "--link", "symlink"], "--link"),
    ("mark", [*MARK, "--device", "quantum"], "quantum"),
    ("mark", [*MARK, "--marker", "{root}/junk.pt"], "junk.pt"),
    ("mark", ["--key", KEY, "--data", REF, "--fraction", "0.5", "--out", "{ref}/c0/inside"], "inside"),
    ("mark", ["--key", KEY, "--data", REF, "--fraction", "0.5"], "--out"),
    # detect
    ("detect", ["--key", KEY, "--reference", REF], "--model"),
    ("detect", ["--key", "{root}/corrupt.safetensors", "--model", MARKER], "corrupt.safetensors"),
    ("detect", ["--key", KEY, "--model", "{root}/missing.safetensors"], "missing.safetensors"),
    ("detect", ["--key", KEY, "--model", "{root}/junk.pt"], "junk.pt"),
    ("detect", ["--key", KEY, "--model", "{root}/corrupt.safetensors"], "corrupt.safetensors"),
    ("detect", ["--key", KEY, "--model", "{root}/folder"], "folder"),
    ("detect", ["--key", KEY, "--model", MARKER, "--arch", "nonexistent_net", "--reference", REF], "nonexistent_net"),
    ("detect", ["--key", KEY, "--model", MARKER, "--arch", "mlp", "--reference", REF], "do not fit the architecture"),
    ("detect", ["--key", KEY, "--model", MARKER, "--reference", "{root}/nowhere"], "nowhere"),
    ("detect", ["--key", KEY, "--model", MARKER, "--reference", "fashion-mnist:val"], "holdout"),
    ("detect", [*WHITE, "--class-map", "0-0"], "0-0"),
    ("detect", [*WHITE, "--class-map", "99:0"], "99"),
    ("detect", [*WHITE, "--head", "no_such_layer"], "no_such_layer"),
    ("detect", [*WHITE, "--alpha", "2"], "alpha"),
    ("detect", [*WHITE, "--batch-size", "0"], "batch_size"),
    ("detect", [*WHITE, "--alignment", "magic"], "--alignment"),
    ("detect", [*WHITE, "--json", "{root}/folder"], "folder"),
    ("detect", ["--key", KEY, "--black-box", "--probes", REF], "--endpoint"),
    ("detect", ["--key", KEY, "--black-box", "--endpoint", "ftp://example.org", "--probes", REF], "ftp://example.org"),
    ("detect", [*BLACK, "--combine", "fisher"], "--combine"),
    ("detect", [*BLACK, "--combine", "t", "--controls", "2"], "control sets"),
    ("detect", [*BLACK, "--published", "{root}/folder"], "mark.json"),
    ("detect", [*BLACK, "--probes", REF, "--probes-per-class", "0"], "per class"),
    ("detect", [*BLACK, "--reference-model", "{root}/junk.pt", "--probes", REF], "junk.pt"),
    ("detect", ["--model", MARKER], "--key"),
    # references
    ("references", ["--data", REF, "--out", "{fresh}/bank", "--epochs", "0"], "--epochs"),
    ("references", ["--data", REF, "--out", "{fresh}/bank", "--members", "vgg"], "vgg"),
    ("references", ["--data", "{root}/nowhere", "--out", "{fresh}/bank"], "nowhere"),
    ("references", ["--out", "{fresh}/bank"], "--data"),
    # train
    ("train", ["--data", REF, "--out", "{fresh}/model.pt"], "model.pt"),
    ("train", ["--data", "{root}/nowhere", "--out", "{fresh}/m.safetensors"], "nowhere"),
    ("train", [*TRAIN, "--recipe", "{root}/missing.json"], "missing.json"),
    ("train", [*TRAIN, "--recipe", "{root}/bad.json"], "bad.json"),
    ("train", [*TRAIN, "--recipe", "{root}/list.json"], "list.json"),
    ("train", [*TRAIN, "--recipe", "{root}/folder"], "folder"),
    ("train", [*TRAIN, "--recipe", "{root}/unknown.json"], "bogus_field"),
    ("train", [*TRAIN, "--mode", "finetune"], "--init"),
    ("train", [*TRAIN, "--mode", "distill"], "--teacher"),
    ("train", [*TRAIN, "--mode", "telepathy"], "--mode"),
    ("train", [*TRAIN, "--mode", "finetune", "--init", "{root}/missing.safetensors"], "missing.safetensors"),
    ("train", [*TRAIN, "--arch", "nonexistent_net"], "nonexistent_net"),
    ("train", [*TRAIN, "--lr", "-1"], "lr"),
    ("train", [*TRAIN, "--batch-size", "0"], "batch_size"),
    ("train", [*TRAIN, "--size", "0"], "size"),
    ("train", [*TRAIN, "--test", "{root}/nowhere"], "nowhere"),
    ("train", [*TRAIN, "--device", "quantum"], "quantum"),
    ("train", ["--out", "{fresh}/m.safetensors"], "--data"),
    # experiment
    ("experiment", ["{root}/missing.toml", "--out", OUT], "missing.toml"),
    ("experiment", ["{root}/bad.toml", "--out", OUT], "bad.toml"),
    ("experiment", ["{root}/unknown.toml", "--out", OUT], "bogus_setting"),
    ("experiment", ["{root}/folder", "--out", OUT], "folder"),
    ("experiment", ["{root}/bad.json", "--out", OUT], "bad.json"),
    ("experiment", ["{root}/arch.toml", "--dry-run"], "nonexistent_net"),
    ("experiment", ["{root}/unknown.toml", "--device", "quantum", "--out", OUT], "quantum"),
    ("experiment", ["{root}/unknown.toml", "--limit", "many"], "--limit"),
    ("experiment", [], "config"),
    # demo (every case fails before the marking network is trained or any image is marked)
    ("demo", ["--out", OUT, "--fraction", "0"], "--fraction"),
    ("demo", ["--out", OUT, "--fraction", "ten"], "--fraction"),
    ("demo", ["--out", OUT, "--mark-steps", "-1"], "steps"),
    ("demo", ["--out", OUT, "--probes", "0"], "probes"),
    ("demo", ["--out", OUT, "--controls", "0"], "--controls"),
    ("demo", ["--out", OUT, "--references", "-1"], "--references"),
    ("demo", ["--out", OUT, "--train-images", "-5"], "--train-images"),
    ("demo", ["--out", OUT, "--arch", "nonexistent_net"], "nonexistent_net"),
    ("demo", ["--out", OUT, "--device", "quantum"], "quantum"),
    ("demo", ["--out", OUT, "--marker", "{root}/missing.safetensors"], "missing.safetensors"),
    ("demo", ["--out", "{root}/plain.file"], "plain.file"),
    # plan (every case fails before any run record is read or any audit simulated)
    ("plan", ["--classes", "0", "--dim", "128", "--fraction", "0.05"], "--classes"),
    ("plan", ["--classes", "10", "--dim", "128", "--fraction", "1.5"], "1.5"),
    ("plan", ["--classes", "10", "--dim", "128", "--fraction", "0.05", "--from", "{root}/folder"], "folder"),
    ("plan", ["--classes", "10", "--dim", "-3", "--fraction", "0.05"], "--dim"),
    ("plan", ["--classes", "10", "--dim", "128", "--fraction", "0.05", "--test", "fishr"], "fishr"),
    ("plan", ["--classes", "10", "--dim", "128", "--fraction", "0.05", "--target", "2"], "--target"),
    ("plan", ["--classes", "10", "--dim", "128", "--fraction", "0.05", "--draws", "0"], "--draws"),
    ("plan", ["--dim", "128", "--fraction", "0.05"], "--classes"),
]


@pytest.mark.parametrize(("command", "args", "names"), CASES,
                         ids=[f"{c}-{i}" for i, (c, _, _) in enumerate(CASES)])
def test_bad_arguments_give_one_paragraph_and_exit_status_2(world, tmp_path, capsys, command, args, names):
    code = main([command, *_expand(args, world, tmp_path)])
    err = capsys.readouterr().err
    assert code == 2, err
    assert_one_paragraph_error(err, f"radioactive {command}", names)


def test_subcommand_list_is_covered():
    """A new subcommand must get its bad-argument cases here."""
    from radioactive.cli import build_parser

    parser = build_parser()
    choices = next(a.choices for a in parser._actions if a.dest == "command")
    assert set(choices) == {c for c, _, _ in CASES}


@pytest.mark.parametrize(("argv", "prog", "names"), [
    (["teleport"], "radioactive", "teleport"),
    (["keygen", "--out", "k.safetensors", "--frobnicate"], "radioactive keygen", "--frobnicate"),
])
def test_unknown_commands_and_options(capsys, argv, prog, names):
    assert main(argv) == 2
    assert_one_paragraph_error(capsys.readouterr().err, prog, names)


def test_bugs_keep_their_traceback_and_say_how_to_report(world, tmp_path, capsys, monkeypatch):
    import radioactive.cli.keygen as keygen

    def broken(args):
        raise ZeroDivisionError("an unexpected bug")

    monkeypatch.setattr(keygen, "run", broken)
    assert main(["keygen", "--out", str(tmp_path / "k")]) == 1
    err = capsys.readouterr().err
    assert "Traceback" in err and "ZeroDivisionError" in err and "bug in radioactive" in err and "report" in err


def test_interrupt_exits_130(tmp_path, capsys, monkeypatch):
    import radioactive.cli.keygen as keygen

    def interrupted(args):
        raise KeyboardInterrupt

    monkeypatch.setattr(keygen, "run", interrupted)
    assert main(["keygen", "--out", str(tmp_path / "k")]) == 130
    err = capsys.readouterr().err
    assert "Traceback" not in err and "rerun the same command" in err


def test_debug_reraises_for_developers(world, tmp_path, monkeypatch):
    argv = ["keygen", "--out", str(tmp_path / "k"), "--marker", str(world / "missing.safetensors")]
    with pytest.raises(ModelLoadError, match="missing.safetensors"):
        main(["--debug", *argv])
    monkeypatch.setenv("RADIOACTIVE_DEBUG", "1")
    with pytest.raises(ModelLoadError):
        main(argv)


@pytest.mark.parametrize(("args", "names"), [
    (["mark", "--key", "{root}/missing.safetensors", "--data", REF, "--fraction", "0.5", "--out", OUT],
     "missing.safetensors"),
    (["train", "--data", REF, "--out", "{fresh}/m.safetensors", "--recipe", "{root}/bad.json"], "bad.json"),
])
def test_a_real_process_prints_no_traceback(world, tmp_path, args, names):
    """What reaches the terminal, stderr as a whole (logging and warnings included), from a fresh interpreter."""
    done = subprocess.run([sys.executable, "-m", "radioactive", *_expand(args, world, tmp_path)],
                          capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert done.returncode == 2, done.stderr
    assert_one_paragraph_error(done.stderr, f"radioactive {args[0]}", names)
