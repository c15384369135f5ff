"""Time the package's Numba kernels against plain NumPy and (if installed) PyTorch on MNIST.

Run from the checkout (``make benchmark`` does the same with the defaults)::

    .venv/bin/python benchmarks/run.py [--repeats 7] [--which minimal,epoch] [--threads N]

Three measurements, chosen with ``--which`` (comma-separated):

``minimal``
    One full-batch iteration of the write-up's 784 -> 10 -> 10 network (forward, backward and
    update on all 60,000 training images): (a) a plain-NumPy float64 reference written like the
    write-up, (b) the package (``NNetworkMinimal.fit``), (c) PyTorch on the CPU, float32.
``epoch``
    One epoch of mini-batch SGD, 784 -> 256 -> 128 -> 10, batch 128, lr 0.05, momentum 0.9,
    He init: (b) ``NNetworkExtended``, (c) PyTorch (``nn.Linear``, ``optim.SGD``), and (a') a
    plain-NumPy float32 loop.  All three start from the same weights and print their test
    accuracy afterwards, to show that they learn equally.
``seeds``
    Not timing: the spread of the write-up's result (5,000 full-batch iterations, alpha 0.1) over
    seeds 0..4.  Slow (25,000 iterations: tens of minutes), so not in the default set.

Every implementation is warmed up before it is timed (Numba compiles on the first call, or loads
its on-disk cache), and the implementations take turns repeat after repeat, so that a change in
the machine's load hits them all alike.  The script prints figures only: it asserts nothing about
speed and exits 0.  PyTorch is optional and never a dependency of the package; without it the
PyTorch rows are skipped.  On a busy machine compare with ``--threads 1``: see README.md.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

import numba
import numpy as np

import mnistnn
from mnistnn import reference
from mnistnn.kernels.pixels import sparse_pixels

try:
    import torch
except ImportError:
    torch = None

try:
    import threadpoolctl
except ImportError:
    threadpoolctl = None

TORCH_HINT = "torch not installed (optional: pip install torch==2.13.0)"
SECTIONS = ("minimal", "epoch", "seeds")
DEFAULT_SECTIONS = "minimal,epoch"
# Seconds of rest before each timed turn: a library's worker threads keep spinning for a while
# after their last task (OpenBLAS, OpenMP), and would otherwise slow down whoever runs next.
PAUSE = 0.5

Params = list[np.ndarray]


# ---------------------------------------------------------------------------- machine


def cpu_model() -> str:
    """The CPU's name from /proc/cpuinfo (Linux), else what ``platform`` knows."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def blas_info() -> str:
    """NumPy's BLAS library and its thread count (needs threadpoolctl, else 'unknown')."""
    if threadpoolctl is None:
        return "unknown (pip install threadpoolctl to see it)"
    pools = [p for p in threadpoolctl.threadpool_info() if p.get("user_api") == "blas"]
    if not pools:
        return "none found"
    return ", ".join(
        f"{p['internal_api']} {p.get('version')} ({p['num_threads']} threads)" for p in pools
    )


def print_machine(threads: int) -> None:
    """CPU, cores, load and library versions: the context every figure below needs."""
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    load = " / ".join(f"{x:.2f}" for x in os.getloadavg()) if hasattr(os, "getloadavg") else "n/a"
    rows = [
        ("CPU", cpu_model()),
        ("cores", f"{os.cpu_count()} logical, {usable} usable by this process"),
        ("load average", f"{load} (1 / 5 / 15 min; other work on the machine skews timings)"),
        ("threads", f"{threads} (Numba{', PyTorch' if torch else ''} and NumPy's BLAS)"),
        ("python", platform.python_version()),
        ("numpy", f"{np.__version__}, BLAS: {blas_info()}"),
        ("numba", numba.__version__),
        ("torch", torch.__version__ if torch else TORCH_HINT),
        ("mnistnn", mnistnn.__version__),
    ]
    print("Machine")
    for key, value in rows:
        print(f"  {key:<13} {value}")
    print(flush=True)


# ---------------------------------------------------------------------------- helpers


def median_min(values: Sequence[float]) -> tuple[float, float]:
    """``(median, minimum)`` of a list of timings."""
    return statistics.median(values), min(values)


def print_table(title: str, header: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    """A plain-text table: first column left-aligned, the others right-aligned."""
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]

    def line(cells: Sequence[str]) -> str:
        first = f"{cells[0]:<{widths[0]}}"
        rest = (f"{c:>{w}}" for c, w in zip(cells[1:], widths[1:], strict=True))
        return "  " + "  ".join([first, *rest])

    print(title)
    print(line(header))
    print("  " + "  ".join("-" * w for w in widths))
    for row in rows:
        print(line(row))
    print(flush=True)


def timed(fn: Callable[[], Any]) -> float:
    """Seconds taken by one call of ``fn`` (wall clock)."""
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def timed_cpu(fn: Callable[[], Any]) -> tuple[float, float]:
    """Wall-clock and CPU seconds (this process, all threads) of one call of ``fn``."""
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - wall, time.process_time() - cpu


def take_turns(
    impls: dict[str, Callable[[], Any]], rounds: int, per_call: dict[str, int]
) -> tuple[dict[str, list[float]], dict[str, list[float]]]:
    """Call every implementation ``rounds`` times, taking turns, each after a rest of ``PAUSE``
    seconds: ``(wall ms, CPU ms)`` lists per name, divided by ``per_call[name]``."""
    times: dict[str, list[float]] = {name: [] for name in impls}
    cpu: dict[str, list[float]] = {name: [] for name in impls}
    for _ in range(rounds):
        for name, fn in impls.items():
            time.sleep(PAUSE)
            wall, used = timed_cpu(fn)
            times[name].append(wall / per_call[name] * 1e3)
            cpu[name].append(used / per_call[name] * 1e3)
    return times, cpu


def describe_first_layer(X: np.ndarray, spread: str) -> None:
    """Print what listing the nonzero pixels costs (every first layer works on them only)."""
    flat = X.reshape(X.shape[0], -1)
    once = statistics.median([timed(lambda: sparse_pixels(flat)) for _ in range(3)])
    print(
        f"  (b) first layer works on the nonzero pixels only; listing them costs "
        f"{once * 1e3:.0f} ms once per fit call (spread over {spread})"
    )


# ---------------------------------------------------------------------------- (1) full batch


def reference_step(
    weights: Params, biases: Params, I: np.ndarray, y: np.ndarray, alpha: float  # noqa: E741
) -> None:
    """One full-batch iteration in plain NumPy, the write-up's equations as
    :mod:`mnistnn.reference` writes them: ``W = W - alpha * dW`` for every array, in place."""
    _, dWs, dBs = reference.backward(weights, biases, I, y)
    for p, g in zip(weights + biases, dWs + dBs, strict=True):
        p -= alpha * g


def torch_full_batch_step(p: list[Any], X: Any, L: Any, alpha: float) -> None:
    """The same iteration in PyTorch, by hand, samples as rows: ``X`` ``(N, 784)`` float32 in
    [0, 1], ``L`` ``(N, 10)`` one-hot; ``p = [W (10, 784), B (10,), w (10, 10), b (10,)]``."""
    W, B, w, b = p
    N = X.shape[0]
    H = torch.addmm(B, X, W.T)
    Hh = H.clamp_min(0.0)
    dO = torch.softmax(torch.addmm(b, Hh, w.T), dim=1) - L
    dw = dO.T @ Hh / N
    db = dO.sum(dim=0) / N
    dH = (dO @ w) * (H > 0)
    dW = dH.T @ X / N
    dB = dH.sum(dim=0) / N
    W -= alpha * dW
    B -= alpha * dB
    w -= alpha * dw
    b -= alpha * db


def bench_minimal(repeats: int, iterations: int) -> None:
    """(1): ms per full-batch iteration of 784 -> 10 -> 10 on the 60,000 training images."""
    print("(1) One full-batch iteration, 784 -> 10 -> 10, 60,000 images, alpha 0.1")
    X, y = mnistnn.load_mnist("train")
    alpha = 0.1
    net = mnistnn.NNetworkMinimal(alpha=alpha, maxiterations=iterations, seed=0, progress=False)
    start = [a.copy() for a in (net.weights[0], net.biases[0], net.weights[1], net.biases[1])]

    began = time.perf_counter()
    I = reference.inputs(X)  # noqa: E741 (the write-up's name)
    seconds = time.perf_counter() - began
    print(
        f"  (a) setup: I = X.reshape(N, -1).T / 255 as float64: {I.nbytes / 1e6:.0f} MB "
        f"(the uint8 pixels: {X.nbytes / 1e6:.0f} MB), made once in {seconds:.2f} s"
    )
    ref_w = [start[0].astype(np.float64), start[2].astype(np.float64)]
    ref_b = [start[1].astype(np.float64), start[3].astype(np.float64)]

    impls: dict[str, Callable[[], None]] = {}
    per_call: dict[str, int] = {}
    impls["(a) NumPy float64 reference"] = lambda: reference_step(ref_w, ref_b, I, y, alpha)
    per_call["(a) NumPy float64 reference"] = 1
    impls["(b) mnistnn NNetworkMinimal.fit"] = lambda: net.fit(X, y)
    per_call["(b) mnistnn NNetworkMinimal.fit"] = iterations

    warm = 2  # warm-up iterations, from the same start for everyone: also a correctness check
    for _ in range(warm):
        reference_step(ref_w, ref_b, I, y, alpha)
    net.maxiterations = warm
    first = timed(lambda: net.fit(X, y))
    print(f"  (b) first fit (Numba compiles, or loads its on-disk cache): {first:.2f} s")
    describe_first_layer(X, f"its {iterations} iterations")
    net.maxiterations = iterations
    diffs = [f"(b) {np.abs(net.weights[0] - ref_w[0]).max():.1e}"]

    if torch is not None:
        Xt = torch.from_numpy(X.reshape(X.shape[0], -1).astype(np.float32) / np.float32(255))
        Lt = torch.from_numpy(reference.one_hot(y, 10).T.astype(np.float32))
        tp = [torch.from_numpy(a.astype(np.float32)) for a in start]
        name = "(c) PyTorch float32, by hand"
        impls[name] = lambda: [torch_full_batch_step(tp, Xt, Lt, alpha) for _ in range(iterations)]
        per_call[name] = iterations
        for _ in range(warm):
            torch_full_batch_step(tp, Xt, Lt, alpha)
        diffs.append(f"(c) {np.abs(tp[0].numpy() - ref_w[0]).max():.1e}")
    print(f"  after {warm} iterations from the same weights, max |W - W_(a)|: {', '.join(diffs)}")
    print(
        f"  (a) runs 1 iteration per repeat; (b) and (c) run {iterations} and report the mean; "
        f"{repeats} repeats, taking turns, each after a rest of {PAUSE} s",
        flush=True,
    )

    times, cpu = take_turns(impls, repeats, per_call)

    base_med, base_min = median_min(times["(a) NumPy float64 reference"])
    rows = []
    for name, ms in times.items():
        med, low = median_min(ms)
        used = statistics.median(cpu[name])
        ratios = f"{base_med / med:.2f}x", f"{base_min / low:.2f}x"
        rows.append([name, f"{med:.1f}", f"{low:.1f}", f"{used:.1f}", *ratios])
    if torch is None:
        rows.append(["(c) PyTorch", "-", "-", "-", "-", "-"])
    print_table(
        "  ms per iteration (lower is better); CPU = process time of all threads; "
        "speed-up = time of (a) / time, from the medians and from the minima",
        ["implementation", "median ms", "min ms", "CPU ms", "speed-up (medians)", "(minima)"],
        rows,
    )
    if torch is None:
        print(f"  {TORCH_HINT}\n")


# ---------------------------------------------------------------------------- (2) one epoch


def numpy_epoch(weights, biases, X, y, order, batch_size, velocity, alpha, momentum) -> None:
    """One epoch of mini-batch SGD in plain NumPy, in place: for each batch of ``order``,
    :func:`mnistnn.reference.backward` and :func:`mnistnn.reference.update` (the loop of
    :mod:`mnistnn.training`, without the package's estimators)."""
    for start in range(0, len(order), batch_size):
        rows = order[start : start + batch_size]
        I = reference.inputs(X[rows], weights[0].dtype)  # noqa: E741 (the write-up's name)
        _, dWs, dBs = reference.backward(weights, biases, I, y[rows])
        reference.update(weights + biases, dWs + dBs, velocity, alpha, momentum)


def numpy_accuracy(weights: Params, biases: Params, X: np.ndarray, y: np.ndarray) -> float:
    """Accuracy of the NumPy network on images ``X`` (uint8), by :mod:`mnistnn.reference`."""
    proba = reference.predict_proba(weights, biases, reference.inputs(X, weights[0].dtype))
    return float(np.mean(proba.argmax(axis=0) == y))


def bench_epoch(epochs: int) -> None:
    """(2): seconds per epoch of mini-batch SGD, 784 -> 256 -> 128 -> 10, batch 128."""
    hidden, bs, lr, momentum = (256, 128), 128, 0.05, 0.9
    print(
        f"(2) One epoch of mini-batch SGD, 784 -> {hidden[0]} -> {hidden[1]} -> 10, batch {bs}, "
        f"lr {lr}, momentum {momentum}, He init, 60,000 images"
    )
    X, y = mnistnn.load_mnist("train")
    Xte, yte = mnistnn.load_mnist("test")
    N = X.shape[0]
    net = mnistnn.NNetworkExtended(
        hidden_layers=hidden,
        alpha=lr,
        momentum=momentum,
        init="he",
        batch_size=bs,
        epochs=1,
        seed=0,
        progress=False,
    )
    start = [a.copy() for pair in zip(net.weights, net.biases, strict=True) for a in pair]

    Xf = X.reshape(N, -1).astype(np.float32) / np.float32(255)
    Xte_f = Xte.reshape(Xte.shape[0], -1).astype(np.float32) / np.float32(255)
    np_w, np_b = [a.copy() for a in start[0::2]], [a.copy() for a in start[1::2]]
    np_v = [np.zeros_like(a) for a in np_w + np_b]
    rng = np.random.default_rng(0)

    impls: dict[str, Callable[[], None]] = {}
    accuracy: dict[str, Callable[[], float]] = {}
    impls["(b) mnistnn NNetworkExtended"] = lambda: net.fit(X, y)
    accuracy["(b) mnistnn NNetworkExtended"] = lambda: net.score(Xte, yte)
    torch_name = "(c) PyTorch nn.Linear + optim.SGD"
    if torch is not None:
        model = torch.nn.Sequential(
            torch.nn.Linear(784, hidden[0]),
            torch.nn.ReLU(),
            torch.nn.Linear(hidden[0], hidden[1]),
            torch.nn.ReLU(),
            torch.nn.Linear(hidden[1], 10),
        )
        with torch.no_grad():
            for param, value in zip(model.parameters(), start, strict=True):
                param.copy_(torch.from_numpy(value))
        opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum)
        loss_fn = torch.nn.CrossEntropyLoss()
        Xt, yt = torch.from_numpy(Xf), torch.from_numpy(y.astype(np.int64))
        Xte_t = torch.from_numpy(Xte_f)
        gen = torch.Generator().manual_seed(0)

        def torch_epoch() -> None:
            perm = torch.randperm(N, generator=gen)
            for s in range(0, N, bs):
                idx = perm[s : s + bs]
                opt.zero_grad(set_to_none=True)
                loss_fn(model(Xt[idx]), yt[idx]).backward()
                opt.step()

        def torch_accuracy() -> float:
            with torch.no_grad():
                pred = model(Xte_t).argmax(dim=1).numpy()
            return float(np.mean(pred == yte))

        impls[torch_name] = torch_epoch
        accuracy[torch_name] = torch_accuracy
    numpy_name = "(a') NumPy float32, mnistnn.reference"
    impls[numpy_name] = lambda: numpy_epoch(
        np_w, np_b, X, y, rng.permutation(N), bs, np_v, lr, momentum
    )
    accuracy[numpy_name] = lambda: numpy_accuracy(np_w, np_b, Xte, yte)

    describe_first_layer(X, "the epoch")
    for name, fn in impls.items():  # warm-up epoch (the package compiles or loads its cache)
        print(f"  warm-up epoch {name}: {timed(fn):.2f} s", flush=True)
    rest = f"each after a rest of {PAUSE} s"
    print(f"  timing {epochs} more epochs each, taking turns, {rest}", flush=True)
    times, cpu = take_turns(impls, epochs, dict.fromkeys(impls, 1))

    ref_name, ref_label = (torch_name, "(c)") if torch is not None else (numpy_name, "(a')")
    ref_med, ref_min = median_min(times[ref_name])
    rows = []
    for name, ms in times.items():
        med, low = median_min(ms)
        used = statistics.median(cpu[name])
        ratios = f"{ref_med / med:.2f}", f"{ref_min / low:.2f}"
        rows.append(
            [name, f"{med:.0f}", f"{low:.0f}", f"{used:.0f}", *ratios, f"{accuracy[name]():.4f}"]
        )
    if torch is None:
        rows.append(["(c) PyTorch", "-", "-", "-", "-", "-", "-"])
    print_table(
        f"  ms per epoch (lower is better); CPU = process time of all threads; ratio = time of "
        f"{ref_label} / time, from the medians and from the minima (> 1: faster than "
        f"{ref_label}); test accuracy after {epochs + 1} epochs",
        [
            "implementation",
            "median ms",
            "min ms",
            "CPU ms",
            f"{ref_label}/this (medians)",
            "(minima)",
            "test acc",
        ],
        rows,
    )
    if torch is None:
        print(f"  {TORCH_HINT}\n")


# ---------------------------------------------------------------------------- (3) seeds


def bench_seeds(seeds: Sequence[int] = range(5), iterations: int = 5000) -> None:
    """(3): the write-up's training (784 -> 10 -> 10, alpha 0.1) for several seeds."""
    print(
        f"(3) The write-up's procedure over seeds {seeds[0]}..{seeds[-1]}: NNetworkMinimal, "
        f"{iterations} full-batch iterations, alpha 0.1 (write-up: 0.9354 train, 0.9288 test)"
    )
    X, y = mnistnn.load_mnist("train")
    Xte, yte = mnistnn.load_mnist("test")
    rows, train, test = [], [], []
    for seed in seeds:
        net = mnistnn.NNetworkMinimal(
            alpha=0.1, maxiterations=iterations, seed=seed, progress=False
        )
        seconds = timed(lambda net=net: net.fit(X, y))
        train.append(net.score(X, y))
        test.append(net.score(Xte, yte))
        rows.append([str(seed), f"{train[-1]:.4f}", f"{test[-1]:.4f}", f"{seconds:.1f}"])
        print(f"  seed {seed} done", flush=True)
    for label, fn in (("mean", statistics.mean), ("min", min), ("max", max)):
        rows.append([label, f"{fn(train):.4f}", f"{fn(test):.4f}", ""])
    rows.append(["range", f"{max(train) - min(train):.4f}", f"{max(test) - min(test):.4f}", ""])
    print_table("  accuracy after training", ["seed", "train", "test", "fit s"], rows)


# ---------------------------------------------------------------------------- main


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """The command line, checked; ``which`` becomes a list of section names."""
    parser = argparse.ArgumentParser(
        description="Time mnistnn's Numba kernels against NumPy and (optional) PyTorch.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--repeats", type=int, default=7, help="timed repeats in (1)")
    parser.add_argument(
        "--which",
        default=DEFAULT_SECTIONS,
        help=f"comma-separated sections out of {','.join(SECTIONS)} (seeds takes minutes)",
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="threads for Numba, PyTorch and NumPy's BLAS (default: Numba's, i.e. all cores)",
    )
    parser.add_argument(
        "--iterations", type=int, default=20, help="iterations per repeat for (b) and (c) in (1)"
    )
    parser.add_argument(
        "--epochs",
        type=int,
        default=3,
        help="timed epochs per implementation in (2), after one warm-up epoch",
    )
    args = parser.parse_args(argv)
    args.which = [w.strip() for w in args.which.split(",") if w.strip()]
    unknown = sorted(set(args.which) - set(SECTIONS))
    if unknown:
        parser.error(f"unknown section(s) {', '.join(unknown)}; choose from {', '.join(SECTIONS)}")
    for name in ("repeats", "iterations", "epochs"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be at least 1")
    if args.threads is not None and not 1 <= args.threads <= numba.config.NUMBA_NUM_THREADS:
        parser.error(
            f"--threads must be in 1..{numba.config.NUMBA_NUM_THREADS} "
            "(set NUMBA_NUM_THREADS to allow more)"
        )
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Print the machine, then run the chosen sections; always returns 0."""
    args = parse_args(argv)
    os.environ.setdefault("MNISTNN_PROGRESS", "0")
    threads = args.threads or numba.get_num_threads()
    numba.set_num_threads(threads)
    if torch is not None:
        torch.set_num_threads(threads)
    limiter = threadpoolctl.threadpool_limits(threads, "blas") if threadpoolctl else None
    print_machine(threads)
    began = time.perf_counter()
    if "minimal" in args.which:
        bench_minimal(args.repeats, args.iterations)
    if "epoch" in args.which:
        bench_epoch(args.epochs)
    if "seeds" in args.which:
        bench_seeds()
    load = " / ".join(f"{x:.2f}" for x in os.getloadavg()) if hasattr(os, "getloadavg") else "n/a"
    print(f"Done in {time.perf_counter() - began:.0f} s; load average now {load}")
    if limiter is not None:
        limiter.restore_original_limits()
    return 0


if __name__ == "__main__":
    sys.exit(main())
