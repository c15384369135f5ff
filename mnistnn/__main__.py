"""The ``mnistnn`` command line: fetch the data, train a network, evaluate it, classify images.

::

    mnistnn fetch [--dataset mnist fashion]         download (if needed) and verify the data
    mnistnn train --dataset mnist --out model.npz   train a network, report accuracy, save it
    mnistnn evaluate model.npz                      accuracy and a per-class table on a split
    mnistnn predict model.npz digit.png [...]       classify image files (PNG, JPEG, ...)

``python -m mnistnn ...`` is the same program.  This module only parses arguments and prints:
the data comes from :mod:`mnistnn.datasets`, the networks from :mod:`mnistnn.network`, the
file format from :mod:`mnistnn.modelfile`, the scores from :mod:`mnistnn.metrics`, the
pixels of image files from :mod:`mnistnn.images`.  Any error prints one line
``mnistnn: error: ...`` on stderr and exits with status 2; a warning (e.g. a training run that
diverged) prints one line ``mnistnn: warning: ...``; Ctrl-C exits with 130.  ``predict`` gives
no prediction for a blank image (one warning line, ``IMAGE: no prediction (blank image)`` on
stdout) and then exits with status 1.  ``train`` checks ``--out`` before training; if saving
still fails afterwards (a full disk), the model is saved to a temporary file that the error
names, so the training is not lost.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import tempfile
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from . import __version__, datasets, metrics
from ._files import check_writable, writable_target
from .datasets import DatasetFetchError, DatasetSpec
from .idx import IdxFormatError
from .images import MNIST_SIDE, load_image
from .modelfile import ModelFormatError, read_metadata
from .network import NNetworkExtended, NNetworkMinimal, TrainingDivergedError

__all__ = ["build_parser", "main"]

PROG = "mnistnn"
DATASET_KEYS = list(datasets.DATASETS)  # ["mnist", "fashion"]
MODEL_CLASSES: dict[str, type[NNetworkExtended]] = {
    cls.__name__: cls for cls in (NNetworkExtended, NNetworkMinimal)
}
DEFAULT_HIDDEN = (128, 64)
DEFAULT_EPOCHS = 10
DEFAULT_BATCH_SIZE = 128
DEFAULT_ITERATIONS = 5000  # the write-up's full-batch run

DATA_HOME_HELP = (
    "data folder (default: $MNISTNN_DATA, else the checkout's data/, else a user cache)"
)


class CliError(Exception):
    """A problem reported as one line on stderr, with exit status 2."""


# Everything the package (or the OS, or Pillow) raises for bad input: reported, never a traceback.
EXPECTED_ERRORS: tuple[type[BaseException], ...] = (
    CliError,
    ModelFormatError,
    IdxFormatError,
    DatasetFetchError,
    TrainingDivergedError,
    OSError,
    ValueError,
    MemoryError,
)


# --------------------------------------------------------------------------- argument types


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {value}")
    return value


def _number(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {text!r}")
    return value


def _positive_float(text: str) -> float:
    value = _number(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text}")
    return value


def _unit_interval(text: str) -> float:
    """A number in [0, 1): momentum and the validation fraction."""
    value = _number(text)
    if not 0.0 <= value < 1.0:
        raise argparse.ArgumentTypeError(f"must be at least 0 and below 1, got {text}")
    return value


def _seed(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a non-negative integer, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be a non-negative integer, got {value}")
    return value


# --------------------------------------------------------------------------- the parser


def build_parser() -> argparse.ArgumentParser:
    """The ``mnistnn`` parser; each subcommand stores its handler in ``args.run``."""
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="A neural network from scratch on MNIST and Fashion-MNIST.",
        epilog="Run 'mnistnn COMMAND --help' for the options of a command.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    fetch = commands.add_parser(
        "fetch",
        help="download (if needed) and verify the datasets",
        description="Download (if needed) and verify MNIST and Fashion-MNIST.",
    )
    fetch.add_argument(
        "--dataset",
        nargs="+",
        choices=DATASET_KEYS,
        default=DATASET_KEYS,
        help="datasets to fetch (default: all)",
    )
    fetch.add_argument("--data-home", type=Path, metavar="DIR", help=DATA_HOME_HELP)
    fetch.add_argument("--quiet", action="store_true", help="print errors only")
    fetch.add_argument("--recheck", action="store_true", help="re-hash files already verified")
    fetch.set_defaults(run=run_fetch)

    train = commands.add_parser(
        "train",
        help="train a network and save it",
        description=(
            "Train a dense ReLU network (NNetworkExtended) on a dataset's training split, "
            "print its train and test accuracy, and save it. Mini-batch SGD by default; "
            "--full-batch runs the original write-up's full-batch gradient descent."
        ),
    )
    train.add_argument("--dataset", choices=DATASET_KEYS, default="mnist", help="default: mnist")
    train.add_argument(
        "--hidden",
        nargs="+",
        type=_positive_int,
        default=list(DEFAULT_HIDDEN),
        metavar="N",
        help="hidden layer widths (default: 128 64)",
    )
    train.add_argument(
        "--epochs",
        type=_positive_int,
        metavar="N",
        help=f"passes over the data (default: {DEFAULT_EPOCHS})",
    )
    train.add_argument(
        "--batch-size",
        type=_positive_int,
        metavar="N",
        help=f"images per SGD step (default: {DEFAULT_BATCH_SIZE})",
    )
    train.add_argument(
        "--full-batch",
        action="store_true",
        help="full-batch gradient descent: every step uses every training image",
    )
    train.add_argument(
        "--iterations",
        type=_positive_int,
        metavar="N",
        help=f"steps of --full-batch training (default: {DEFAULT_ITERATIONS})",
    )
    train.add_argument(
        "--lr",
        type=_positive_float,
        default=0.1,
        metavar="RATE",
        help="learning rate (default: %(default)s)",
    )
    train.add_argument(
        "--momentum",
        type=_unit_interval,
        default=0.0,
        metavar="M",
        help="in [0, 1) (default: %(default)s)",
    )
    train.add_argument(
        "--init",
        choices=("uniform", "he"),
        default="uniform",
        help=(
            "weight initialisation: U[-0.5, 0.5), as in the notebook the write-up builds on, or"
            " He normal (default: uniform)"
        ),
    )
    train.add_argument(
        "--validation",
        type=_unit_interval,
        default=0.0,
        metavar="FRACTION",
        help="share of the training images held out for validation (default: 0)",
    )
    train.add_argument(
        "--seed", type=_seed, default=0, metavar="N", help="random seed (default: 0)"
    )
    train.add_argument(
        "--out",
        type=Path,
        default=Path("model.npz"),
        metavar="FILE",
        help="where to save the model (default: model.npz)",
    )
    train.add_argument("--force", action="store_true", help="overwrite --out if it exists")
    train.add_argument("--data-home", type=Path, metavar="DIR", help=DATA_HOME_HELP)
    train.add_argument("--quiet", action="store_true", help="no progress bars")
    train.set_defaults(run=run_train)

    evaluate = commands.add_parser(
        "evaluate",
        help="accuracy of a saved model, per class",
        description="Score a saved model on a dataset split: accuracy and a per-class table.",
    )
    evaluate.add_argument("model", type=Path, metavar="MODEL.npz", help="a saved model")
    evaluate.add_argument(
        "--dataset",
        choices=DATASET_KEYS,
        help="default: the dataset the model was trained on, else mnist",
    )
    evaluate.add_argument(
        "--split", choices=("train", "test"), default="test", help="default: test"
    )
    evaluate.add_argument("--data-home", type=Path, metavar="DIR", help=DATA_HOME_HELP)
    evaluate.set_defaults(run=run_evaluate)

    predict = commands.add_parser(
        "predict",
        help="classify image files",
        description=(
            "Classify image files with a saved model. An image (grayscale or colour, at least "
            "28x28 pixels, any aspect ratio) becomes an MNIST digit the way MNIST's were made: "
            "cropped to the ink, fitted into a 20x20 box, centred by its centre of mass in "
            "28x28. A light background is inverted, since MNIST digits are light on black."
        ),
    )
    predict.add_argument("model", type=Path, metavar="MODEL.npz", help="a saved model")
    predict.add_argument("images", type=Path, nargs="+", metavar="IMAGE", help="image files")
    predict.add_argument(
        "--top", type=_positive_int, default=3, metavar="K", help="classes to list (default: 3)"
    )
    predict.add_argument(
        "--dataset",
        choices=DATASET_KEYS,
        help="whose class names to print (default: the dataset the model was trained on)",
    )
    predict.set_defaults(run=run_predict)
    return parser


# --------------------------------------------------------------------------- fetch


def run_fetch(args: argparse.Namespace) -> int:
    """Fetch and verify each dataset asked for; one error line names every one that failed."""
    progress = False if args.quiet else None  # None: $MNISTNN_PROGRESS decides
    failures = []
    for key in dict.fromkeys(args.dataset):
        try:
            paths = datasets.fetch(key, args.data_home, progress=progress, recheck=args.recheck)
        except DatasetFetchError as exc:
            failures.append(str(exc))
            continue
        if not args.quiet:
            for path in paths.values():
                print(f"verified  {path}")
    if failures:
        raise CliError("; ".join(failures))
    return 0


# --------------------------------------------------------------------------- train


def run_train(args: argparse.Namespace) -> int:
    """Load the data, fit, score, save."""
    if args.full_batch and (args.epochs is not None or args.batch_size is not None):
        raise CliError("--epochs and --batch-size are for mini-batch training, not --full-batch")
    if not args.full_batch and args.iterations is not None:
        raise CliError(
            "--iterations is for --full-batch training; mini-batch training uses --epochs"
        )
    _check_output(args.out, args.force)
    progress = False if args.quiet else None  # None: $MNISTNN_PROGRESS decides
    spec = datasets.get_spec(args.dataset)
    X, y = datasets.load(spec, "train", args.data_home, progress)
    X_test, y_test = datasets.load(spec, "test", args.data_home, progress)
    model = NNetworkExtended(
        nodes_in=math.prod(spec.image_shape),
        hidden_layers=args.hidden,
        nodes_out=len(spec.classes),
        alpha=args.lr,
        maxiterations=args.iterations or DEFAULT_ITERATIONS,
        batch_size=None if args.full_batch else args.batch_size or DEFAULT_BATCH_SIZE,
        epochs=args.epochs or DEFAULT_EPOCHS,
        momentum=args.momentum,
        init=args.init,
        validation_fraction=args.validation,
        seed=args.seed,
        progress=progress,
    )
    print(f"data      {spec.name}: {len(X):,} training and {len(X_test):,} test images")
    print(f"network   {_arrows(model.layer_sizes)} ({model.n_parameters:,} parameters)")
    print(f"training  {_schedule(model)}", flush=True)
    model.fit(X, y)
    train_accuracy, test_accuracy = model.score(X, y), model.score(X_test, y_test)
    model.training_info.update(
        dataset=spec.key, train_accuracy=train_accuracy, test_accuracy=test_accuracy
    )
    _save(model, args.out)
    print(f"train accuracy       {train_accuracy:.2%}")
    if "val_accuracy" in model.history:
        held_out = len(X) - model.training_info["samples"]
        print(
            f"validation accuracy  {model.history['val_accuracy'][-1]:.2%} "
            f"({held_out:,} held-out training images)"
        )
    print(f"test accuracy        {test_accuracy:.2%}")
    print(f"training time        {model.training_info['seconds']:.1f} s")
    print(f"saved                {args.out}")
    return 0


def _check_output(out: Path, force: bool) -> None:
    """Refuse, before any training, an --out that cannot or should not be written: a folder,
    anything else that is not a regular file (even with --force), an existing file without
    --force, a missing or unwritable folder.  A symbolic link is written through."""
    if out.is_dir():
        raise CliError(f"--out {out} is a folder; give a file name such as {out / 'model.npz'}")
    try:
        writable_target(out)
    except OSError as exc:
        raise CliError(f"cannot save to {exc.filename}: {exc.strerror}") from None
    if (out.exists() or out.is_symlink()) and not force:
        raise CliError(f"{out} already exists; add --force to overwrite it or choose another --out")
    if not out.parent.is_dir():
        raise CliError(f"cannot save to {out}: the folder {out.parent} does not exist")
    try:
        check_writable(out)
    except OSError as exc:
        raise CliError(
            f"cannot save to {out}: {exc.strerror or exc}; choose another --out"
        ) from None


def _save(model: NNetworkExtended, out: Path) -> None:
    """``model.save(out)``; if that fails after all (a disk that filled up during training),
    save to a new temporary file instead and raise a CliError naming both."""
    try:
        model.save(out)
        return
    except OSError as exc:
        problem = f"cannot save to {out}: {exc.strerror or exc}"
    name = ""
    try:
        fd, name = tempfile.mkstemp(prefix="mnistnn-model-", suffix=".npz")
        os.close(fd)
        model.save(name)
    except OSError as exc:
        if name:
            Path(name).unlink(missing_ok=True)
        raise CliError(
            f"{problem}; saving to a temporary file failed too ({exc.strerror or exc}): "
            "the trained model is lost; free some space and train again"
        ) from None
    raise CliError(f"{problem}; the model was saved to {name} instead: move it from there")


def _arrows(sizes: Sequence[int]) -> str:
    return " -> ".join(str(n) for n in sizes)


def _schedule(model: NNetworkExtended) -> str:
    """One line describing how ``model`` will be trained."""
    if model.batch_size is None:
        steps = f"full-batch gradient descent, {model.maxiterations:,} iterations"
    else:
        epochs = f"{model.epochs} epoch" + "s" * (model.epochs != 1)
        steps = f"mini-batch SGD, {epochs} of batches of {model.batch_size}"
    return (
        f"{steps}, learning rate {model.alpha:g}, momentum {model.momentum:g}, "
        f"{model.init} init, seed {model.seed}"
    )


# --------------------------------------------------------------------------- evaluate


def run_evaluate(args: argparse.Namespace) -> int:
    """Accuracy, a per-class table and the most confused pairs on one split."""
    model = load_any_model(args.model)
    trained_on = _recorded_dataset(model)
    spec = datasets.get_spec(args.dataset or trained_on or "mnist")
    _check_compatible(model, spec, args.model)
    X, y = datasets.load(spec, args.split, args.data_home)
    cm = metrics.confusion_matrix(y, model.predict(X), n_classes=len(spec.classes))
    correct = np.diagonal(cm)
    note = f", trained on {datasets.get_spec(trained_on).name}" if trained_on else ""
    print(f"model     {args.model} ({type(model).__name__} {_arrows(model.layer_sizes)}{note})")
    print(f"data      {spec.name} {args.split} split: {len(y):,} images")
    print(f"accuracy  {correct.sum() / len(y):.2%} ({correct.sum():,} of {len(y):,})")
    print()
    width = max(len("class"), *(len(name) for name in spec.classes))
    print(f"{'class':<{width}}  {'images':>7}  {'correct':>7}  {'accuracy':>8}")
    for name, count, hits, acc in zip(
        spec.classes, cm.sum(axis=1), correct, metrics.per_class_accuracy(cm), strict=True
    ):
        shown = f"{acc:.2%}" if count else "-"
        print(f"{name:<{width}}  {count:>7,}  {hits:>7,}  {shown:>8}")
    pairs = metrics.most_confused_pairs(cm, k=3)
    if pairs:
        listed = ", ".join(f"{spec.classes[t]} -> {spec.classes[p]} ({n})" for t, p, n in pairs)
        print(f"\nmost confused (true -> predicted): {listed}")
    return 0


def load_any_model(path: Path) -> NNetworkExtended:
    """Load a model file with the class recorded in its metadata."""
    class_name = read_metadata(path)["class"]
    cls = MODEL_CLASSES.get(class_name)
    if cls is None:
        known = ", ".join(MODEL_CLASSES)
        raise CliError(f"{path}: holds a {class_name}, which this command cannot load ({known})")
    return cls.load(path)


def _recorded_dataset(model: NNetworkExtended) -> str | None:
    """The dataset key ``train`` recorded in the model, if it is one we know."""
    key = model.training_info.get("dataset")
    return key if isinstance(key, str) and key in datasets.DATASETS else None


def _check_compatible(model: NNetworkExtended, spec: DatasetSpec, path: Path) -> None:
    pixels = math.prod(spec.image_shape)
    if model.nodes_in != pixels:
        raise CliError(
            f"{path}: the model takes {model.nodes_in} inputs, but {spec.name} images have "
            f"{pixels} pixels"
        )
    if model.nodes_out != len(spec.classes):
        raise CliError(
            f"{path}: the model has {model.nodes_out} outputs, but {spec.name} has "
            f"{len(spec.classes)} classes"
        )


# --------------------------------------------------------------------------- predict


def run_predict(args: argparse.Namespace) -> int:
    """Read every image first (one error stops everything), then classify them together."""
    model = load_any_model(args.model)
    if model.nodes_in != MNIST_SIDE * MNIST_SIDE:
        raise CliError(
            f"{args.model}: the model takes {model.nodes_in} inputs, not "
            f"{MNIST_SIDE}x{MNIST_SIDE} = {MNIST_SIDE * MNIST_SIDE} pixels"
        )
    key = args.dataset or _recorded_dataset(model)
    names = datasets.get_spec(key).classes if key else datasets.MNIST_CLASSES
    if len(names) != model.nodes_out:
        names = tuple(str(k) for k in range(model.nodes_out))
    loaded = [load_image(path) for path in args.images]  # a blank one warns
    proba = model.predict_proba(np.stack([pixels for pixels, _ in loaded]))
    width = max(len(name) for name in names)
    blank = 0
    for path, (pixels, inverted), p in zip(args.images, loaded, proba, strict=True):
        if not pixels.any():
            print(f"{path}: no prediction (blank image)")
            blank += 1
            continue
        order = np.argsort(-p, kind="stable")
        note = "  (light background: inverted)" if inverted else ""
        print(f"{path}: {names[order[0]]}{note}")
        for k in order[: args.top]:
            print(f"  {names[k]:<{width}}  {p[k]:7.2%}")
    return 1 if blank else 0


# --------------------------------------------------------------------------- main


def _describe(exc: BaseException) -> str:
    """The message of an expected error, without the errno clutter of OSError."""
    if isinstance(exc, OSError) and exc.filename is not None and exc.strerror:
        return f"{exc.filename}: {exc.strerror}"
    if isinstance(exc, MemoryError):
        return f"not enough memory ({exc or 'an allocation failed'}); try a smaller network"
    return str(exc) or type(exc).__name__


def _show_warning(message: Warning | str, *args: object, **kwargs: object) -> None:
    """Print a warning as one line, ``mnistnn: warning: ...``, after the output so far."""
    sys.stdout.flush()
    print(f"{PROG}: warning: {message}", file=sys.stderr, flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line ``argv`` (default: ``sys.argv[1:]``); return the exit status."""
    args = build_parser().parse_args(argv)  # exits with status 2 on bad arguments
    run: Callable[[argparse.Namespace], int] = args.run
    try:
        with warnings.catch_warnings():
            warnings.showwarning = _show_warning
            return run(args)
    except KeyboardInterrupt:
        print(f"\n{PROG}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # e.g. `mnistnn evaluate model.npz | head`: stop quietly
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 1
    except EXPECTED_ERRORS as exc:
        sys.stdout.flush()
        print(f"{PROG}: error: {_describe(exc)}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
