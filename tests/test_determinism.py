"""The same bits everywhere: whatever CPU Numba compiles the kernels for, whatever the number of
threads, and whether a process compiled the kernels or loaded them from Numba's cache.

One script trains small networks down every path of the kernels (one pass per image, several
networks side by side, layer by layer with mini-batches; float32 and float64) and prints one
SHA-256 of their weights, probabilities and gradients.  It runs in the test's process (the host,
with the kernels the other tests use) and in fresh processes, each with a cache folder of its own,
under several ``NUMBA_CPU_NAME`` values: Intel and AMD models, and the
x86-64 levels from SSE4.2 without FMA (v2) to AVX-512 (v4).  A name runs with its own
instructions when this CPU has them all, else with this CPU's instructions and the named one's
tuning (how LLVM picks vector widths and unrolling), which is what made the results differ
before the kernels fixed every summation order.
"""

from __future__ import annotations

import contextlib
import io
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

SCRIPT = """
import hashlib, importlib, numba, numpy as np
from numba.core.caching import FunctionCache
from mnistnn import NNetworkExtended, NNetworkMinimal, fit_many
rng = np.random.default_rng(0)
X = ((rng.random((700, 784)) < 0.2) * rng.integers(0, 256, (700, 784))).astype(np.uint8)
y = rng.integers(0, 10, 700)
nets = [
    NNetworkMinimal(maxiterations=3, seed=0),  # one pass per image
    *fit_many([NNetworkMinimal(maxiterations=3, seed=s, init="he") for s in (1, 2)], X, y),
    NNetworkExtended(hidden_layers=(70, 20), batch_size=128, epochs=1, momentum=0.9, init="he",
                     seed=0),  # layer by layer: a wide first layer, a dense one, a narrow one
    NNetworkMinimal(maxiterations=2, seed=3, dtype="float64"),
]
h = hashlib.sha256()
for net in nets:
    if not net.history:
        net.fit(X, y)
    h.update(net._theta.tobytes())
    h.update(b"".join(g.tobytes() for part in net.gradients(X[:200], y[:200]) for g in part))
for net in nets[:4]:  # float32: the forward pass and softmax for every architecture
    h.update(net.predict_proba(X[:300]).tobytes())
modules = ("buffers", "pixels", "dense", "softmax", "reductions", "narrow", "layers")
cached = [f for m in modules for f in vars(importlib.import_module(f"mnistnn.kernels.{m}")).values()
          if isinstance(getattr(f, "_cache", None), FunctionCache)]
hits = sum(sum(f.stats.cache_hits.values()) for f in cached)
misses = sum(sum(f.stats.cache_misses.values()) for f in cached)
print(numba.get_num_threads(), h.hexdigest(), hits, misses)
"""

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


def run_here() -> list[str]:
    """Run :data:`SCRIPT` in this process (the host's CPU, its threads, the package's cache)."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(SCRIPT, {"__name__": "determinism"})
    return out.getvalue().split()


def run_script(cache: Path, **env: str) -> list[str]:
    """Run :data:`SCRIPT` in a new process with its own Numba cache folder and ``env``:
    ``[threads, digest, kernels loaded from the cache, kernels compiled]``."""
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT],
        env=dict(os.environ, MNISTNN_PROGRESS="0", NUMBA_CACHE_DIR=str(cache), **env),
        cwd=cache,  # not the checkout: `python -c` imports from the working directory first
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert result.returncode == 0, (env, result.stderr[-2000:])
    return result.stdout.split()


@pytest.mark.skipif(not host_flags() & {"sse4_2"}, reason="needs an x86-64 CPU (the names are)")
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
    assert compiled[0] == "2" and loaded[0] == "1"
    assert int(compiled[2]) == 0 and int(compiled[3]) > 0  # an empty cache: all compiled
    assert int(loaded[2]) > 0 and int(loaded[3]) == 0  # all loaded, drivers too
    digests = {"host": host[1], f"{again}, loaded, 1 thread": loaded[1]}
    digests |= {name: out[1] for name, out in results.items()}
    with capsys.disabled():
        print(f"\n  digest {host[1][:16]}... under " + ", ".join(digests), end="")
    assert len(set(digests.values())) == 1, digests
