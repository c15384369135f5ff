"""The same bits everywhere: on every CPU (x86-64 and 64-bit ARM), whatever CPU Numba compiles
the kernels for, whatever the number of threads, and whether a process compiled the kernels or
loaded them from Numba's cache.

One script trains small networks down every path of the kernels (one pass per image, several
networks side by side, layer by layer with mini-batches, float64; more than 16 classes) and
prints a SHA-256 per path of their weights and gradients, one of the probabilities that
``predict_proba`` gives, one of the losses, and "all": the first five paths' bytes together.
The test compares them with :data:`STORED`, the values committed with the kernels, and names the
paths that differ; it runs on any machine (``make test-arm`` runs it on aarch64 under qemu).

On x86-64 it also runs the script in fresh processes, each with a cache folder of its own, under
several ``NUMBA_CPU_NAME`` values: Intel and AMD models, and the x86-64 levels from SSE4.2
without FMA (v2) to AVX-512 (v4).  A name runs with its own instructions when this CPU has them
all, else with this CPU's instructions and the named one's tuning (how LLVM picks vector widths
and unrolling), which is what made the results differ before the kernels fixed every summation
order.
"""

from __future__ import annotations

import contextlib
import functools
import io
import json
import os
import platform
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

SCRIPT = """
import hashlib, importlib, json, numba, numpy as np
from numba.core.caching import FunctionCache
from mnistnn import NNetworkExtended, NNetworkMinimal, fit_many
rng = np.random.default_rng(0)
X = ((rng.random((700, 784)) < 0.2) * rng.integers(0, 256, (700, 784))).astype(np.uint8)
y = rng.integers(0, 10, 700)
paths = {  # the networks that train down each path of the kernels
    "one pass": [NNetworkMinimal(maxiterations=3, seed=0)],  # one image at a time
    "side by side": fit_many([NNetworkMinimal(maxiterations=3, seed=s, init="he") for s in (1, 2)],
                             X, y),
    "layer by layer": [NNetworkExtended(hidden_layers=(70, 20), batch_size=128, epochs=1,
                                        momentum=0.9, init="he", seed=0)],  # wide, dense, narrow
    "float64": [NNetworkMinimal(maxiterations=2, seed=3, dtype="float64")],
}
def trained(net):  # its parameters (each layer's W row by row, then b) and gradients, as bytes
    if not net.history:
        net.fit(X, y)
    grads = net.gradients(X[:200], y[:200])
    return b"".join(W.tobytes() + b.tobytes() for W, b in zip(net.weights, net.biases)) + b"".join(
        g.tobytes() for part in grads for g in part)
digests, everything = {}, hashlib.sha256()  # "all": every path's bytes, one after another
def digest(path, data, alone=False):
    digests[path] = hashlib.sha256(data).hexdigest()
    if not alone:
        everything.update(data)
for path, nets in paths.items():
    digest(path, b"".join(trained(net) for net in nets))
float32 = [net for path in ("one pass", "side by side", "layer by layer") for net in paths[path]]
digest("predict_proba", b"".join(net.predict_proba(X[:300]).tobytes() for net in float32))
digests["all"] = everything.hexdigest()
wide = NNetworkExtended(hidden_layers=(30,), nodes_out=20, batch_size=100, epochs=2, seed=4)
digest("over 16 classes", trained(wide.fit(X, rng.integers(0, 20, 700))), alone=True)
nets = [net for group in paths.values() for net in group] + [wide]
losses = [v for net in nets for v in (*net.history["loss"], net.loss(X, y))]
digest("loss", np.array(losses).tobytes(), alone=True)  # the history's and a fresh one, float64
modules = ("buffers", "pixels", "dense", "softmax", "reductions", "narrow", "layers")
cached = [f for m in modules for f in vars(importlib.import_module(f"mnistnn.kernels.{m}")).values()
          if isinstance(getattr(f, "_cache", None), FunctionCache)]
hits = sum(sum(f.stats.cache_hits.values()) for f in cached)
misses = sum(sum(f.stats.cache_misses.values()) for f in cached)
print(json.dumps({"threads": numba.get_num_threads(), "digests": digests, "hits": hits,
                  "misses": misses}))
"""

# SCRIPT's digests, made on x86-64 (Linux, numpy 2.4.6, numba 0.68.1), every one the same on
# aarch64 under qemu (`make test-arm`).  After a change meant to give other bits, print the new
# ones with `python tests/test_determinism.py` and say in the commit why they changed.
STORED = {
    "one pass": "0241d75a99602f99a4d413f182bc65d6a1c3e08b261f42e70e82be3cf2775f9f",
    "side by side": "26140a0ebde984391e040dcb915916c5a57998de18efae11a2665d1aefd8ef54",
    "layer by layer": "6606d3c22ccd3a7bab54eaca7020d9fcb3ab62f722bfb2a762bdc392e340dc30",
    "float64": "468965f1aac2a97dd83946693030f5d2964179c1878212ea515106617ff34f57",
    "predict_proba": "79b5a2ead5c8ffb9a90423520f9f57cc11940833d279a8dc87ba791b0f3568ea",
    "all": "cf24b9fefdd9b8efa23d80401204feb5a4b3a039773b6b587047f301b42de523",
    "over 16 classes": "f47be0ef51a2e4ece177fc64f145ae0da504879f685007423aad841c91a79c81",
    "loss": "39d491b61521d8d1bdbe3ea435e4c0bb901c36ceb98d1139383c36bfcf4c76db",
}

# What each CPU name lets LLVM emit, among the instruction sets that matter to the kernels'
# code (as /proc/cpuinfo names them): a name runs with its own instructions when the host has
# all of these.
X86_64_V2 = {"sse4_1", "sse4_2", "ssse3", "popcnt"}
X86_64_V3 = X86_64_V2 | {"avx", "avx2", "fma", "bmi1", "bmi2", "f16c", "movbe", "abm"}
X86_64_V4 = X86_64_V3 | {"avx512f", "avx512bw", "avx512cd", "avx512dq", "avx512vl"}
ICELAKE = X86_64_V4 | {
    "avx512ifma", "avx512vbmi", "avx512_vbmi2", "avx512_vnni", "avx512_bitalg",
    "avx512_vpopcntdq", "gfni", "vaes", "vpclmulqdq", "sha_ni",
}  # fmt: skip
CPU_NAMES = {
    "x86-64-v2": X86_64_V2,
    "x86-64-v3": X86_64_V3,
    "x86-64-v4": X86_64_V4,
    "skylake-avx512": X86_64_V4,
    "icelake-server": ICELAKE,
    "znver4": ICELAKE | {"avx512_bf16", "sse4a"},
}


def host_flags() -> set[str]:
    """The instruction sets this CPU has, from /proc/cpuinfo (empty where there is none)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return set()
    for line in text.splitlines():
        if line.startswith("flags"):
            return set(line.split(":", 1)[1].split())
    return set()


@functools.cache
def run_here() -> dict:
    """Run :data:`SCRIPT` in this process (the host's CPU, its threads, the package's cache):
    ``{"threads": ..., "digests": {path: sha256}, "hits": ..., "misses": ...}``."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(SCRIPT, {"__name__": "determinism"})
    return json.loads(out.getvalue())


def run_script(cache: Path, **env: str) -> dict:
    """Run :data:`SCRIPT` in a new process with its own Numba cache folder and ``env``; its
    result as :func:`run_here`'s (``hits``: kernels loaded from the cache, ``misses``: compiled)."""
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT],
        env=dict(os.environ, MNISTNN_PROGRESS="0", NUMBA_CACHE_DIR=str(cache), **env),
        cwd=cache,  # not the checkout: `python -c` imports from the working directory first
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert result.returncode == 0, (env, result.stderr[-2000:])
    return json.loads(result.stdout)


def differing(digests: dict[str, str], reference: dict[str, str]) -> list[str]:
    """The paths whose digest is not the reference's (a path only one of them has counts)."""
    return [path for path in reference | digests if digests.get(path) != reference.get(path)]


def test_the_stored_digests_path_by_path(capsys):
    digests = run_here()["digests"]
    with capsys.disabled():
        print(f"\n  {platform.machine()}: digest {digests['all'][:16]}...", end="")
    assert not differing(digests, STORED), (
        f"other bits than the stored ones on {', '.join(differing(digests, STORED))}: "
        f"{json.dumps(digests, indent=1)}"
    )


X86_64 = platform.machine().lower() in ("x86_64", "amd64")


@pytest.mark.skipif(
    not (X86_64 and host_flags() & {"sse4_2"}), reason="needs x86-64 Linux (the names are x86-64's)"
)
def test_same_bits_on_every_cpu_thread_count_and_cache_state(tmp_path, capsys):
    flags = host_flags()
    runs: dict[str, dict[str, str]] = {}
    for name, needs in CPU_NAMES.items():
        own = needs <= flags
        runs[name] = {"NUMBA_CPU_NAME": name, "NUMBA_NUM_THREADS": "2"}
        if own:
            runs[name]["NUMBA_CPU_FEATURES"] = ""
        with capsys.disabled():
            missing = ", ".join(sorted(needs - flags))
            how = "its own instructions" if own else f"this CPU's instructions (it lacks {missing})"
            print(f"\n  {name}: compiled with {how}", end="")
    for name in runs:
        (tmp_path / name).mkdir()
    again = "x86-64-v3"  # compiled from nothing, then loaded from its cache by a second process
    with ThreadPoolExecutor(max_workers=2) as pool:  # each compiles on one core
        futures = {n: pool.submit(run_script, tmp_path / n, **env) for n, env in runs.items()}
        host = run_here()  # this process, with the kernels the other tests use (its own cache)
        compiled = futures[again].result()
        loaded = run_script(tmp_path / again, **{**runs[again], "NUMBA_NUM_THREADS": "1"})
        results = {key: future.result() for key, future in futures.items()}
    assert compiled["threads"] == 2 and loaded["threads"] == 1
    assert compiled["hits"] == 0 and compiled["misses"] > 0  # an empty cache: all compiled
    assert loaded["hits"] > 0 and loaded["misses"] == 0  # all loaded, drivers too
    outs = {"host": host, f"{again}, loaded, 1 thread": loaded} | results
    with capsys.disabled():
        print(f"\n  digest {host['digests']['all'][:16]}... under " + ", ".join(outs), end="")
    other = {name: differing(out["digests"], host["digests"]) for name, out in outs.items()}
    assert not any(other.values()), {name: paths for name, paths in other.items() if paths}


if __name__ == "__main__":
    print(json.dumps(run_here()["digests"], indent=4))
