"""The same bits everywhere: on every CPU (x86-64 and 64-bit ARM), whatever CPU Numba compiles
the kernels for, whatever the number of threads, and whether a process compiled the kernels or
loaded them from Numba's cache.

One script trains small networks down every path of the kernels (one pass per image, several
networks side by side, layer by layer with mini-batches, float64; more than 16 classes) and
prints three SHA-256 per path: of the networks' weights and gradients, of the probabilities that
``predict_proba`` gives ("proba") and of their losses; and "all", the first four paths' weights
and gradients and their float32 probabilities together.  The test compares them with
:data:`STORED`, the values committed with the kernels, and names the digests that differ; it runs
on any machine.  ``DETERMINISM_PATHS`` picks some of the paths: ``make test-arm`` trains two of
them on aarch64 under qemu, where compiling the kernels is the long part.

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
import hashlib, importlib, json, os, numba, numpy as np
from numba.core.caching import FunctionCache
from mnistnn import NNetworkExtended, NNetworkMinimal, fit_many
rng = np.random.default_rng(0)
X = ((rng.random((700, 784)) < 0.2) * rng.integers(0, 256, (700, 784))).astype(np.uint8)
y = rng.integers(0, 10, 700)
y20 = rng.integers(0, 20, 700)
networks = {  # path: how to train the networks that go down it (each path compiles its kernels)
    "one pass": lambda: [NNetworkMinimal(maxiterations=3, seed=0).fit(X, y)],  # image by image
    "side by side": lambda: fit_many(
        [NNetworkMinimal(maxiterations=3, seed=s, init="he") for s in (1, 2)], X, y),
    "layer by layer": lambda: [NNetworkExtended(  # wide, dense and narrow layers, mini-batches
        hidden_layers=(70, 20), batch_size=128, epochs=1, momentum=0.9, init="he", seed=0
    ).fit(X, y)],
    "float64": lambda: [NNetworkMinimal(maxiterations=2, seed=3, dtype="float64").fit(X, y)],
    "over 16 classes": lambda: [NNetworkExtended(
        hidden_layers=(30,), nodes_out=20, batch_size=100, epochs=2, seed=4).fit(X, y20)],
}
chosen = [p for p in os.environ.get("DETERMINISM_PATHS", "").split(",") if p] or list(networks)
def trained(net):  # its parameters (each layer's W row by row, then b) and gradients, as bytes
    grads = net.gradients(X[:200], y[:200])
    return b"".join(W.tobytes() + b.tobytes() for W, b in zip(net.weights, net.biases)) + b"".join(
        g.tobytes() for part in grads for g in part)
digests, nets = {}, {path: networks[path]() for path in chosen}
sha = lambda data: hashlib.sha256(data).hexdigest()
for path, group in nets.items():
    digests[path] = sha(b"".join(trained(net) for net in group))
    digests[f"{path}: proba"] = sha(b"".join(n.predict_proba(X[:300]).tobytes() for n in group))
    losses = [v for net in group for v in (*net.history["loss"], net.loss(X, y))]  # float64
    digests[f"{path}: loss"] = sha(np.array(losses).tobytes())
together = ("one pass", "side by side", "layer by layer", "float64")
if set(together) <= set(nets):  # "all": these paths' bytes one after another, then predict_proba's
    float32 = [net for path in together[:3] for net in nets[path]]
    digests["all"] = sha(b"".join(trained(n) for path in together for n in nets[path]) + b"".join(
        n.predict_proba(X[:300]).tobytes() for n in float32))
modules = ("buffers", "pixels", "dense", "softmax", "reductions", "narrow", "layers")
cached = [f for m in modules for f in vars(importlib.import_module(f"mnistnn.kernels.{m}")).values()
          if isinstance(getattr(f, "_cache", None), FunctionCache)]
hits = sum(sum(f.stats.cache_hits.values()) for f in cached)
misses = sum(sum(f.stats.cache_misses.values()) for f in cached)
print(json.dumps({"threads": numba.get_num_threads(), "digests": digests, "hits": hits,
                  "misses": misses}))
"""
PATHS = ("one pass", "side by side", "layer by layer", "float64", "over 16 classes")

# SCRIPT's digests, made on x86-64 (Linux, numpy 2.4.6, numba 0.68.1), every one the same on
# aarch64 under qemu (`make test-arm`).  After a change meant to give other bits, print the new
# ones with `python tests/test_determinism.py` and say in the commit why they changed.
STORED = {
    "one pass": "0241d75a99602f99a4d413f182bc65d6a1c3e08b261f42e70e82be3cf2775f9f",
    "one pass: proba": "268814477df291f634ddc0e1a5b5a8f2e513b17d9177f88ca2bd506eec302a41",
    "one pass: loss": "bf107ecfaa9b4d27f64e1cfa2a7e7370755a1d142e6ec08a0122b165b9eb894c",
    "side by side": "26140a0ebde984391e040dcb915916c5a57998de18efae11a2665d1aefd8ef54",
    "side by side: proba": "b9722eaf63d207db0e7af22f26ab9c79c88f182bd8bf353eb60003572c88adf7",
    "side by side: loss": "2e39a43149f40c253cbd678057b82698a5ad15540724840d1e0abc9cc7314924",
    "layer by layer": "6606d3c22ccd3a7bab54eaca7020d9fcb3ab62f722bfb2a762bdc392e340dc30",
    "layer by layer: proba": "9ba6952f17df729ad3d8414d9aa25371b3159560c303adc034afd63243fdd8c6",
    "layer by layer: loss": "774080113ab67d2b7a008e3b8cb8d974ba3c03bee145ed4e0505a034ea576264",
    "float64": "468965f1aac2a97dd83946693030f5d2964179c1878212ea515106617ff34f57",
    "float64: proba": "682acdd03558634cd06924b2ababe0e9e56e9e052660231f112fc99bc1a2b38d",
    "float64: loss": "1cdbdbcf5f1369a9d5a3cf9d0eace65ba027cf3d4641161a11370214ec8a638e",
    "over 16 classes": "f47be0ef51a2e4ece177fc64f145ae0da504879f685007423aad841c91a79c81",
    "over 16 classes: proba": "dff4bf507c7bbd46b5243fc7499f7502b0bfef39a9432156f33aa85f5b79767d",
    "over 16 classes: loss": "cf873a681abc29e5f39035ff7fa2872f48dd949b34719f6028e2d18825d7c2dd",
    "all": "cf24b9fefdd9b8efa23d80401204feb5a4b3a039773b6b587047f301b42de523",
}


def chosen_paths() -> list[str]:
    """The paths this run trains: ``DETERMINISM_PATHS`` (comma-separated names of :data:`PATHS`;
    ``make test-arm`` runs two of them), else all."""
    names = [n for n in os.environ.get("DETERMINISM_PATHS", "").split(",") if n]
    unknown = sorted(set(names) - set(PATHS))
    if unknown:
        raise ValueError(f"DETERMINISM_PATHS names no path {unknown}: choose from {PATHS}")
    return names or list(PATHS)


def expected_digests(paths: list[str]) -> dict[str, str]:
    """The stored digests a run of ``paths`` must give: each path's, its predict_proba's
    ("proba") and its losses', and "all" when the four paths it covers run."""
    keys = [key for path in paths for key in (path, f"{path}: proba", f"{path}: loss")]
    if set(PATHS[:4]) <= set(paths):
        keys.append("all")
    return {key: STORED[key] for key in keys}


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
    paths = chosen_paths()
    digests, expected = run_here()["digests"], expected_digests(paths)
    with capsys.disabled():
        shown = digests.get("all", digests[paths[0]])[:16]
        print(f"\n  {platform.machine()}: {', '.join(paths)}: digest {shown}...", end="")
    assert not differing(digests, expected), (
        f"other bits than the stored ones on {', '.join(differing(digests, expected))}: "
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
