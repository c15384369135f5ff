"""Tests for the command line (mnistnn/__main__.py), driven as a user would drive it.

Each command runs in a subprocess (``python -m mnistnn ...``) with progress bars off.  Training,
evaluation and the image round trip use the real MNIST files of the data folder (``make test``
fetches them first; without them those tests fail) and a tiny network trained once for
the module.  Every error must exit with status 2 and one ``mnistnn: error: ...`` line, never a
traceback.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mnistnn import FASHION_MNIST_CLASSES, NNetworkExtended, NNetworkMinimal, datasets
from mnistnn import __main__ as cli
from mnistnn.modelfile import read_metadata, save_model

ENV = {**os.environ, "MNISTNN_PROGRESS": "0"}
ERROR_LINE = re.compile(r"^mnistnn(?: \w+)?: error: \S")


def run_cli(*args: object, cwd: Path) -> subprocess.CompletedProcess[str]:
    """Run ``python -m mnistnn ARGS`` in ``cwd``; capture its output as text."""
    return subprocess.run(
        [sys.executable, "-m", "mnistnn", *map(str, args)],
        cwd=cwd,
        env=ENV,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )


def assert_error(result: subprocess.CompletedProcess[str], *fragments: str) -> str:
    """Exit status 2, no traceback, and exactly one error line (after argparse's usage, if
    any) that mentions every fragment; returns that line."""
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert lines and ERROR_LINE.match(lines[-1]), result.stderr
    assert sum("error:" in line for line in lines) == 1, result.stderr
    if not lines[0].startswith("usage:"):
        assert len(lines) == 1, result.stderr
    for fragment in fragments:
        assert fragment in lines[-1]
    return lines[-1]


def mnist_present() -> bool:
    folder = datasets.data_home() / datasets.MNIST.folder
    return all((folder / name).is_file() for name in datasets.MNIST.files)


@pytest.fixture(scope="module")
def mnist_files() -> None:
    """The real MNIST files must be there: ``make test`` fetches them first (never skipped)."""
    assert mnist_present(), "the MNIST files are not in the data folder: run `make data` first"


needs_data = pytest.mark.usefixtures("mnist_files")


def digit_like(size: int = 28) -> np.ndarray:
    """A synthetic light-on-black uint8 image: a bright bar in a black frame."""
    image = np.zeros((size, size), dtype=np.uint8)
    image[size // 5 : -size // 5, size // 2 - size // 10 : size // 2 + size // 10] = 255
    image[size // 5 : size // 3, size // 4 : -size // 4] = 180
    return image


def parse_predictions(stdout: str) -> dict[str, tuple[str, list[tuple[str, float]]]]:
    """``{image: (predicted class, [(class, probability), ...])}`` from predict's output."""
    out: dict[str, tuple[str, list[tuple[str, float]]]] = {}
    current = ""
    for line in stdout.splitlines():
        if not line.startswith("  "):
            current, rest = line.split(": ", 1)
            out[current] = (rest.split("  (")[0], [])
        else:
            name, percent = line.strip().rsplit(None, 1)
            out[current][1].append((name.strip(), float(percent.rstrip("%")) / 100))
    return out


def percent_after(label: str, stdout: str) -> str:
    """The ``12.34%`` printed after ``label`` at the start of a line."""
    match = re.search(rf"^{label}\s+(\d+\.\d\d)%", stdout, re.MULTILINE)
    assert match, stdout
    return match.group(1)


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """A tiny MNIST network trained once by the CLI: ``(folder holding model.npz, stdout)``."""
    assert mnist_present(), "the MNIST files are not in the data folder: run `make data` first"
    folder = tmp_path_factory.mktemp("cli")
    result = run_cli(
        "train", "--hidden", 16, "--epochs", 1, "--seed", 0, "--quiet", "--out", "model.npz",
        cwd=folder,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    return folder, result.stdout


@pytest.fixture
def untrained(tmp_path: Path) -> Path:
    """An untrained 784 -> 8 -> 10 model in ``tmp_path`` (no data needed)."""
    path = tmp_path / "untrained.npz"
    NNetworkExtended(hidden_layers=(8,), seed=0, progress=False).save(path)
    return path


@pytest.fixture
def image(tmp_path: Path) -> Path:
    path = tmp_path / "digit.png"
    Image.fromarray(digit_like(56)).save(path)
    return path


# --------------------------------------------------------------------------- help


@pytest.mark.parametrize(
    ("command", "expected"),
    [
        ((), ["fetch", "train", "evaluate", "predict"]),
        (("fetch",), ["--dataset", "--data-home", "--quiet"]),
        (("train",), ["--hidden", "--epochs", "--full-batch", "--lr", "--out", "--force"]),
        (("evaluate",), ["MODEL.npz", "--dataset", "--split"]),
        (("predict",), ["MODEL.npz", "IMAGE", "--top"]),
    ],
)
def test_help(tmp_path: Path, command: tuple[str, ...], expected: list[str]) -> None:
    result = run_cli(*command, "--help", cwd=tmp_path)
    assert result.returncode == 0
    assert result.stdout.startswith(f"usage: {' '.join(('mnistnn', *command))} ")
    for word in expected:
        assert word in result.stdout
    assert result.stderr == ""


def test_no_command_prints_usage(tmp_path: Path) -> None:
    assert_error(run_cli(cwd=tmp_path), "COMMAND")


# --------------------------------------------------------------------------- train, evaluate


@needs_data
def test_train_reports_and_saves(trained: tuple[Path, str]) -> None:
    folder, stdout = trained
    assert "784 -> 16 -> 10 (12,730 parameters)" in stdout
    assert "mini-batch SGD, 1 epoch of batches of 128" in stdout
    test_accuracy = float(percent_after("test accuracy", stdout)) / 100
    assert 0.7 < test_accuracy < 1.0  # one epoch of a 16-unit network: about 85%
    assert re.search(r"^training time\s+\d+\.\d s$", stdout, re.MULTILINE)
    meta = read_metadata(folder / "model.npz")
    assert meta["class"] == "NNetworkExtended"
    assert meta["layer_sizes"] == [784, 16, 10]
    assert meta["params"]["epochs"] == 1 and meta["params"]["batch_size"] == 128
    assert meta["training"]["dataset"] == "mnist"
    assert meta["training"]["test_accuracy"] == pytest.approx(test_accuracy, abs=5e-5)


@needs_data
def test_evaluate_matches_train(trained: tuple[Path, str]) -> None:
    folder, train_stdout = trained
    result = run_cli("evaluate", "model.npz", cwd=folder)
    assert result.returncode == 0, result.stderr
    assert "NNetworkExtended 784 -> 16 -> 10, trained on MNIST" in result.stdout
    assert percent_after("accuracy", result.stdout) == percent_after("test accuracy", train_stdout)
    rows = re.findall(r"^(\d)\s+([\d,]+)\s+([\d,]+)\s+(\d+\.\d\d)%$", result.stdout, re.MULTILINE)
    assert [row[0] for row in rows] == list(datasets.MNIST_CLASSES)
    _, labels = datasets.load_mnist("test")
    counts = [int(row[1].replace(",", "")) for row in rows]
    assert counts == np.bincount(labels, minlength=10).tolist()
    hits = sum(int(row[2].replace(",", "")) for row in rows)
    assert f"({hits:,} of 10,000)" in result.stdout
    assert "most confused (true -> predicted): " in result.stdout


@needs_data
def test_predict_round_trip(trained: tuple[Path, str], tmp_path: Path) -> None:
    folder, _ = trained
    images, _ = datasets.load_mnist("test")
    digit = images[0]
    Image.fromarray(digit).save(tmp_path / "as_is.png")
    Image.fromarray(255 - digit).save(tmp_path / "inverted.png")
    big = Image.fromarray(255 - digit).resize((100, 80), Image.Resampling.LANCZOS)
    big.save(tmp_path / "inverted_100x80.png")
    big.convert("RGB").save(tmp_path / "inverted_rgb.png")
    names = ["as_is.png", "inverted.png", "inverted_100x80.png", "inverted_rgb.png"]
    paths = [tmp_path / name for name in names]

    result = run_cli("predict", folder / "model.npz", *paths, "--top", 3, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    predictions = parse_predictions(result.stdout)
    assert list(predictions) == [str(p) for p in paths]
    model = NNetworkExtended.load(folder / "model.npz")
    expected = str(model.predict(digit[None])[0])
    assert {label for label, _ in predictions.values()} == {expected}
    for label, top in predictions.values():
        assert len(top) == 3 and top[0][0] == label
        probabilities = [p for _, p in top]
        assert probabilities == sorted(probabilities, reverse=True) and sum(probabilities) <= 1.01
    lines = result.stdout.splitlines()
    assert "(light background: inverted)" not in lines[0]
    assert lines[4].endswith("(light background: inverted)")


@needs_data
def test_train_refuses_to_overwrite(trained: tuple[Path, str]) -> None:
    folder, _ = trained
    before = (folder / "model.npz").read_bytes()
    assert_error(run_cli("train", "--hidden", 4, cwd=folder), "model.npz already exists", "--force")
    assert (folder / "model.npz").read_bytes() == before


@needs_data
def test_train_full_batch_with_validation_and_force(tmp_path: Path) -> None:
    out = tmp_path / "full.npz"
    out.write_text("an old file, to be replaced")
    args = ["--full-batch", "--iterations", 2, "--hidden", 8, "--validation", 0.1]
    result = run_cli("train", *args, "--quiet", "--force", "--out", out.name, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "full-batch gradient descent, 2 iterations" in result.stdout
    assert re.search(r"^validation accuracy\s+\d+\.\d\d% \(6,000 held-out", result.stdout, re.M)
    meta = read_metadata(out)
    assert meta["layer_sizes"] == [784, 8, 10]
    assert meta["params"]["batch_size"] is None and meta["params"]["maxiterations"] == 2


@needs_data
def test_diverging_training_is_a_one_line_warning(tmp_path: Path) -> None:
    """Loss 2.8 -> 1e19 at 10% accuracy: the model used to be saved without a word."""
    args = ["--hidden", 8, "--epochs", 1, "--lr", "1e6", "--quiet", "--out", "m.npz"]
    result = run_cli("train", *args, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    (line,) = result.stderr.splitlines()
    rose = r"mnistnn: warning: training diverged: the loss rose from 2\.\d+ to \S+e\+1"
    assert re.match(rose, line)
    assert "alpha=1e+06" in line and (tmp_path / "m.npz").is_file()


@needs_data
def test_learning_rate_beyond_float32(tmp_path: Path) -> None:
    """One line; it used to follow NumPy's two-line overflow warning."""
    result = run_cli("train", "--hidden", 8, "--lr", "1e39", cwd=tmp_path)
    assert_error(result, "alpha=1e+39 does not fit in float32", "smaller learning rate")


@needs_data
def test_learning_rate_that_is_zero_in_float32(tmp_path: Path) -> None:
    """--lr 1e-320 is 0 in float32: it used to train nothing and save an 11% model in silence."""
    result = run_cli("train", "--hidden", 8, "--lr", "1e-320", "--out", "m.npz", cwd=tmp_path)
    assert_error(result, "alpha=1e-320 is 0 in float32", "larger learning rate")
    assert not (tmp_path / "m.npz").exists()


def test_unwritable_out_is_refused_before_training(tmp_path: Path, run_read_only) -> None:  # type: ignore[no-untyped-def]
    """The error used to come after the whole run, naming a temporary file."""
    (tmp_path / "ro").mkdir()
    argv = [sys.executable, "-m", "mnistnn", "train", "--hidden", "8", "--out", "ro/m.npz"]
    result = run_read_only(tmp_path / "ro", argv, cwd=tmp_path, env=ENV)
    assert_error(result, "cannot save to ro/m.npz:", "choose another --out")
    assert ".tmp" not in result.stderr
    assert result.stdout == ""  # no data loaded, nothing trained
    assert list((tmp_path / "ro").iterdir()) == []


@needs_data
def test_train_with_huge_sizes(tmp_path: Path) -> None:
    """Both used to end in a MemoryError traceback."""
    result = run_cli("train", "--hidden", 10**9, "--quiet", cwd=tmp_path)
    assert_error(result, "784 -> 1000000000 -> 10 network", "memory", "smaller layers")
    args = ["--hidden", 8, "--epochs", 1, "--batch-size", 10**10, "--quiet"]
    result = run_cli("train", *args, "--out", "m.npz", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert read_metadata(tmp_path / "m.npz")["params"]["batch_size"] == 10**10


@needs_data
def test_fetch_verifies_the_real_files(tmp_path: Path) -> None:
    result = run_cli("fetch", "--dataset", "mnist", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("verified") == 4
    quiet = run_cli("fetch", "--dataset", "mnist", "--quiet", cwd=tmp_path)
    assert quiet.returncode == 0 and quiet.stdout == ""


def test_fetch_passes_its_options_on(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    seen: list[tuple] = []

    def fake_fetch(key: str, home: Path, progress: bool | None, recheck: bool) -> dict:
        seen.append((key, home, progress, recheck))
        return {}

    monkeypatch.setattr(cli.datasets, "fetch", fake_fetch)
    argv = ["fetch", "--dataset", "fashion", "--data-home", str(tmp_path), "--quiet", "--recheck"]
    assert cli.main(argv) == 0
    assert seen == [("fashion", tmp_path, False, True)]


def test_one_fetch_command() -> None:
    assert not hasattr(datasets, "main")  # `python -m mnistnn fetch` is the only one


# --------------------------------------------------------------------------- other models


@needs_data
def test_minimal_model_is_detected(tmp_path: Path, image: Path) -> None:
    path = tmp_path / "minimal.npz"
    NNetworkMinimal(seed=0, progress=False).save(path)
    evaluated = run_cli("evaluate", path, cwd=tmp_path)
    assert evaluated.returncode == 0, evaluated.stderr
    assert "NNetworkMinimal 784 -> 10 -> 10" in evaluated.stdout
    predicted = run_cli("predict", path, image, cwd=tmp_path)
    assert predicted.returncode == 0, predicted.stderr
    assert parse_predictions(predicted.stdout)[str(image)][0] in datasets.MNIST_CLASSES


def test_predict_prints_fashion_names(tmp_path: Path, image: Path) -> None:
    model = NNetworkExtended(hidden_layers=(8,), seed=0, progress=False)
    model.training_info["dataset"] = "fashion"
    model.save(tmp_path / "fashion.npz")
    result = run_cli("predict", "fashion.npz", image, "--top", 20, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    label, top = parse_predictions(result.stdout)[str(image)]
    assert label in FASHION_MNIST_CLASSES
    assert sorted(name for name, _ in top) == sorted(FASHION_MNIST_CLASSES)  # --top 20: all 10
    digits = run_cli("predict", "fashion.npz", image, "--dataset", "mnist", cwd=tmp_path)
    assert parse_predictions(digits.stdout)[str(image)][0] in datasets.MNIST_CLASSES


# --------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("args", "fragments"),
    [
        (["frobnicate"], ["invalid choice: 'frobnicate'"]),
        (["train", "--dataset", "cifar"], ["--dataset", "invalid choice: 'cifar'"]),
        (["train", "--epochs", "-1"], ["--epochs", "positive integer"]),
        (["train", "--momentum", "1"], ["--momentum"]),
        (["train", "--iterations", "5"], ["--iterations", "--full-batch"]),
        (["train", "--full-batch", "--epochs", "5"], ["--epochs", "--full-batch"]),
        (["train", "--out", "no/such/folder/model.npz"], ["does not exist"]),
        (["fetch", "--dataset", "emnist"], ["invalid choice: 'emnist'"]),
        (["evaluate", "missing.npz"], ["missing.npz", "No such file"]),
        (["predict", "UNTRAINED", "digit.png", "--top", "0"], ["--top"]),
    ],
)
def test_argument_errors(
    tmp_path: Path, untrained: Path, image: Path, args: list[str], fragments: list[str]
) -> None:
    args = [str(untrained) if a == "UNTRAINED" else a for a in args]
    assert_error(run_cli(*args, cwd=tmp_path), *fragments)


def test_truncated_model(tmp_path: Path, untrained: Path) -> None:
    data = untrained.read_bytes()
    (tmp_path / "cut.npz").write_bytes(data[: len(data) // 2])
    assert_error(run_cli("evaluate", "cut.npz", cwd=tmp_path), "cut.npz", "truncated or corrupt")


def test_text_file_as_model(tmp_path: Path, image: Path) -> None:
    (tmp_path / "notes.npz").write_text("these are my notes, not a model\n")
    assert_error(run_cli("predict", "notes.npz", image, cwd=tmp_path), "not an mnistnn model")


@pytest.mark.parametrize("hidden", [200_000, 10**8])
def test_model_whose_parameters_disagree_with_its_arrays(
    tmp_path: Path, untrained: Path, image: Path, hidden: int
) -> None:
    """Used to cost 2.5 GB and seconds (200,000) or end in a MemoryError traceback (10**8)."""
    with np.load(untrained, allow_pickle=False) as npz:
        arrays = {name: npz[name] for name in npz.files}
    meta = json.loads(str(arrays["metadata"]))
    meta["params"]["hidden_layers"] = [hidden]
    arrays["metadata"] = np.array(json.dumps(meta))
    with open(tmp_path / "edited.npz", "wb") as f:
        np.savez(f, **arrays)
    result = run_cli("predict", "edited.npz", image, cwd=tmp_path)
    assert_error(result, "edited.npz", f"784 -> {hidden} -> 10", "arrays hold 784 -> 8 -> 10")


def test_model_of_an_unknown_class(tmp_path: Path, image: Path) -> None:
    model = NNetworkExtended(hidden_layers=(4,), seed=0)
    save_model(tmp_path / "other.npz", model.weights, model.biases, {"class": "SomethingElse"})
    assert_error(run_cli("predict", "other.npz", image, cwd=tmp_path), "SomethingElse")


def test_model_with_other_input_size(tmp_path: Path, image: Path) -> None:
    NNetworkExtended(nodes_in=20, hidden_layers=(4,), seed=0).save(tmp_path / "small.npz")
    assert_error(run_cli("predict", "small.npz", image, cwd=tmp_path), "20 inputs")
    assert_error(run_cli("evaluate", "small.npz", cwd=tmp_path), "20 inputs", "784 pixels")


def test_image_errors(tmp_path: Path, untrained: Path, image: Path) -> None:
    (tmp_path / "fake.png").write_text("not an image at all\n")
    Image.fromarray(digit_like(10)).save(tmp_path / "tiny.png")
    Image.new("1", (12_000, 12_000)).save(tmp_path / "huge.png")
    cases = {
        "fake.png": ["fake.png", "not an image"],
        "tiny.png": ["10x10", "at least 28x28"],
        "missing.png": ["missing.png", "No such file"],
        "huge.png": ["huge.png: the image is 12000x12000 pixels", "scale it down"],
    }
    for name, fragments in cases.items():
        result = run_cli("predict", untrained, image, name, cwd=tmp_path)
        assert_error(result, *fragments)
        assert result.stdout == ""  # every image is read before anything is printed


def test_interrupt_exits_130(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    def interrupted(path: Path) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "load_any_model", interrupted)
    assert cli.main(["evaluate", str(tmp_path / "model.npz")]) == 130
    err = capsys.readouterr().err
    assert err.strip() == "mnistnn: interrupted" and "Traceback" not in err


# --------------------------------------------------------------------------- issue 31


def test_predict_gives_no_prediction_for_a_blank_image(
    tmp_path: Path, untrained: Path, image: Path
) -> None:
    """A white page used to get '1  14.88%' without a word."""
    white = tmp_path / "white.png"
    Image.new("L", (64, 64), 255).save(white)
    result = run_cli("predict", untrained, white, image, cwd=tmp_path)
    assert result.returncode == 1, result.stderr
    (line,) = result.stderr.splitlines()
    assert line.startswith("mnistnn: warning: ") and f"{white}: the image is blank" in line
    assert f"{white}: no prediction (blank image)" in result.stdout.splitlines()
    assert str(image) in parse_predictions(result.stdout.split("\n", 1)[1])


def test_models_that_cannot_be_used_are_one_line_errors(tmp_path: Path, untrained: Path) -> None:
    """Issue 31 #2 and #3: an encrypted entry was a traceback, weights of 3e38 printed 'nan%'."""
    data = bytearray(untrained.read_bytes())
    at = data.find(b"PK\x01\x02")
    data[at + 8] |= 1  # the first central-directory record says: encrypted
    (tmp_path / "encrypted.npz").write_bytes(data)
    net = NNetworkExtended.load(untrained)
    weights = [w.copy() for w in net.weights]
    weights[0][0, 0] = 3e38
    meta = read_metadata(untrained)
    save_model(tmp_path / "huge.npz", weights, net.biases, meta)
    picture = tmp_path / "digit.png"
    Image.fromarray(digit_like(56)).save(picture)
    for name, phrase in (("encrypted.npz", "is encrypted"), ("huge.npz", "could overflow")):
        assert_error(run_cli("predict", name, picture, cwd=tmp_path), name, phrase)
        assert_error(run_cli("evaluate", name, cwd=tmp_path), name, phrase)


@pytest.mark.posix
def test_train_refuses_an_out_that_is_not_a_regular_file(tmp_path: Path) -> None:
    """`--out /dev/null --force` used to replace /dev/null itself (as root)."""
    os.mkfifo(tmp_path / "fifo")
    (tmp_path / "null.npz").symlink_to(os.devnull)
    for out, phrase in (("fifo", "is a FIFO"), ("null.npz", f"a link to {os.devnull}")):
        result = run_cli("train", "--hidden", 4, "--out", out, "--force", cwd=tmp_path)
        assert_error(result, f"cannot save to {out}", phrase, "not a regular file")
        assert result.stdout == ""  # refused before any data was loaded
    assert (tmp_path / "fifo").is_fifo() and (tmp_path / "null.npz").is_symlink()


@pytest.fixture
def tiny_training(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """``mnistnn train`` arguments for a one-step run on 100 random images (no data folder)."""
    rng = np.random.default_rng(0)
    data = (rng.integers(0, 256, (100, 28, 28), dtype=np.uint8), rng.integers(0, 10, 100))
    monkeypatch.setattr(cli.datasets, "load", lambda *args, **kwargs: data)
    return ["train", "--hidden", "4", "--full-batch", "--iterations", "1", "--quiet"]


def test_train_writes_through_a_symbolic_link(
    tmp_path: Path, tiny_training: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    """The link used to be replaced and the file it points to left as it was."""
    real, link = tmp_path / "real.npz", tmp_path / "link.npz"
    real.write_bytes(b"an old model")
    link.symlink_to(real.name)
    assert cli.main([*tiny_training, "--out", str(link)]) == 2
    assert "already exists" in capsys.readouterr().err
    assert cli.main([*tiny_training, "--out", str(link), "--force"]) == 0
    assert link.is_symlink() and read_metadata(real)["layer_sizes"] == [784, 4, 10]


def test_a_model_that_cannot_be_saved_after_training_is_not_lost(
    tmp_path: Path,
    tiny_training: list[str],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Issue 31 #7: a disk that filled up during training used to lose the model, and the
    error ('[Errno 28] No space left on device') did not name the file."""
    import errno
    import tempfile

    from mnistnn import modelfile

    out = tmp_path / "full" / "m.npz"
    out.parent.mkdir()
    real_write = modelfile.atomic_write

    def full_disk(path: Path):  # type: ignore[no-untyped-def]
        if Path(path).parent == out.parent:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
        return real_write(path)

    monkeypatch.setattr(modelfile, "atomic_write", full_disk)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    assert cli.main([*tiny_training, "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    match = re.fullmatch(
        rf"mnistnn: error: cannot save to {re.escape(str(out))}: No space left on device; the "
        r"model was saved to (\S+) instead: move it from there",
        err,
    )
    assert match, err
    assert read_metadata(match.group(1))["layer_sizes"] == [784, 4, 10]
    assert not out.exists()
