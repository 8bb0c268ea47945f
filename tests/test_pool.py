"""One thread pool: Numba, the GEMMs and the FFTs of the conv kernels run on PyTorch's OpenMP threads."""

from __future__ import annotations

import os
import sys

import numba
import numpy as np
import pytest
import torch

import autotune
from kernels import pool

linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/task")


def cpu_ticks() -> dict[int, int]:
    """CPU time (clock ticks) of each thread of this process, by thread id."""
    ticks = {}
    for tid in os.listdir("/proc/self/task"):
        with open(f"/proc/self/task/{tid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
        ticks[int(tid)] = int(fields[11]) + int(fields[12])
    return ticks


def workers(run) -> set[int]:
    """The threads other than the main one that worked (2+ ticks) through 20 calls of ``run``, and
    more until 0.3 s have passed (20 calls of a 64-channel convolution took under two 10 ms ticks
    per thread on a fast machine)."""
    import time

    before, started, calls = cpu_ticks(), time.perf_counter(), 0
    while calls < 20 or time.perf_counter() - started < 0.3:
        run()
        calls += 1
    after = cpu_ticks()
    return {tid for tid, t in after.items() if t - before.get(tid, 0) >= 2 and tid != os.getpid()}


def in_a_fresh_process(code: str) -> str:
    """Run ``code`` (with the two helpers above defined) in a new interpreter; its stdout."""
    import inspect
    import subprocess

    source = "import os\n" + inspect.getsource(cpu_ticks) + inspect.getsource(workers) + code
    done = subprocess.run([sys.executable, "-c", source], capture_output=True, text=True, timeout=120)
    return done.stdout + done.stderr[-2000:]


def test_numba_runs_on_the_omp_layer_with_torchs_thread_count():
    if "NUMBA_THREADING_LAYER" in os.environ:
        pytest.skip("the user chose a threading layer")
    settings = pool.report()
    assert settings["numba_layer"] == "omp"
    assert settings["numba_threads"] == min(torch.get_num_threads(), numba.config.NUMBA_NUM_THREADS)
    assert settings["omp_wait_policy"] == os.environ.get("OMP_WAIT_POLICY", "default")


def test_import_does_not_change_the_openmp_wait_policy():
    """PyTorch must run as in a process of its own: autotune sets no OMP_WAIT_POLICY."""
    import subprocess

    code = "import os, autotune; print(os.environ.get('OMP_WAIT_POLICY', 'unset'))"
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "unset"


@pytest.mark.parametrize("method", ["im2col", "winograd", "fft", "pointwise"])
def test_conv_kernels_send_their_gemms_and_ffts_to_the_pool(method, monkeypatch):
    """No numpy/scipy BLAS or FFT thread pool is woken by a conv kernel: torch does the work."""
    calls = []
    for name in ("matmul", "mm", "addmm", "bmm", "baddbmm"):
        original = getattr(torch, name)

        def counting(*args, _original=original, **kwargs):
            calls.append(1)
            return _original(*args, **kwargs)

        monkeypatch.setattr(torch, name, counting)
    monkeypatch.setattr(np, "matmul", None)  # any numpy GEMM would now fail loudly
    if method == "fft":  # its GEMM path (few channels take the Numba loop) and torch's FFTs
        from kernels.conv2d import fft

        monkeypatch.setattr(fft, "LANES_MAX", -1)
        monkeypatch.setattr(np.fft, "rfft2", None)
        monkeypatch.setattr(np.fft, "irfft2", None)
    rng = np.random.default_rng(0)
    kernel = 1 if method == "pointwise" else 3
    x = rng.standard_normal((1, 4, 9, 9)).astype(np.float32)
    w = rng.standard_normal((5, 4, kernel, kernel)).astype(np.float32)
    b = rng.standard_normal(5).astype(np.float32)
    y = autotune.conv2d(x, w, b, padding=kernel // 2, method=method)
    ref = torch.nn.functional.conv2d(*(torch.from_numpy(a).double() for a in (x, w, b)), padding=kernel // 2)
    np.testing.assert_allclose(y, ref.numpy(), rtol=1e-4, atol=1e-4)
    assert calls, f"{method} did no GEMM through torch"


@linux_only
def test_numba_parallel_work_runs_on_torchs_worker_threads():
    """The threads that do a Numba prange's work are the ones that ran a torch convolution."""
    if torch.get_num_threads() < 2 or numba.get_num_threads() < 2:
        pytest.skip("one thread: nothing to share")

    @numba.njit(parallel=True)
    def busy(a):  # pragma: no cover - jitted
        total = 0.0
        for i in numba.prange(a.size):
            total += np.sin(a[i]) * np.cos(a[i])
        return total

    data = np.linspace(0, 1, 2_000_000)
    x, w = torch.randn(1, 64, 56, 56), torch.randn(64, 64, 3, 3)
    busy(data)
    torch_workers = workers(lambda: torch.nn.functional.conv2d(x, w, padding=1))
    numba_workers = workers(lambda: busy(data))
    assert numba_workers, "the prange did not run in parallel"
    assert numba_workers <= torch_workers


def test_pool_matmul_and_fft_match_numpy():
    rng = np.random.default_rng(1)
    a = rng.standard_normal((3, 4, 5)).astype(np.float32)
    b = rng.standard_normal((5, 6)).astype(np.float32)
    np.testing.assert_allclose(pool.matmul(a, b), a @ b, rtol=1e-5, atol=1e-5)
    out = np.empty((3, 8, 6), np.float32)
    pool.matmul(a, b, out=out[:, ::2])
    np.testing.assert_allclose(out[:, ::2], a @ b, rtol=1e-5, atol=1e-5)
    x = rng.standard_normal((2, 7, 9))
    np.testing.assert_allclose(pool.rfft2(x, (8, 10)), np.fft.rfft2(x, s=(8, 10)), atol=1e-10)
    np.testing.assert_allclose(pool.irfft2(pool.rfft2(x, (8, 10)), (8, 10))[:, :7, :9], x, atol=1e-12)


@pytest.mark.parametrize(
    ("n", "expected"), [(1, 2), (11, 12), (13, 14), (61, 64), (63, 64), (97, 98), (121, 126), (224, 224)]
)
def test_next_fast_len(n, expected):
    assert pool.next_fast_len(n) == expected


@pytest.mark.parametrize(
    ("n", "largest_prime", "expected"),
    [(59, 3, 64), (68, 3, 72), (68, 5, 72), (68, 7, 70), (121, 5, 128), (5, 2, 8)],
)
def test_next_fast_len_with_fewer_primes(n, largest_prime, expected):
    assert pool.next_fast_len(n, largest_prime) == expected


def test_next_fast_len_names_a_bad_prime():
    with pytest.raises(ValueError, match="largest_prime must be 2, 3, 5 or 7"):
        pool.next_fast_len(10, 11)


@linux_only
@pytest.mark.parametrize("first", ["torch", "autotune"])
def test_one_pool_whichever_is_imported_first(first):
    """In a fresh process, Numba's parallel work runs on PyTorch's worker threads in both orders."""
    if torch.get_num_threads() < 2:
        pytest.skip("one thread: nothing to share")
    code = f"""
import {first}
import numpy as np, numba, torch, autotune
from kernels import pool

@numba.njit(parallel=True)
def busy(a):
    total = 0.0
    for i in numba.prange(a.size):
        total += np.sin(a[i]) * np.cos(a[i])
    return total

data = np.linspace(0, 1, 2_000_000)
x, w = torch.randn(1, 64, 56, 56), torch.randn(64, 64, 3, 3)
busy(data)  # the first parallel region starts the pool's threads
threads = set(cpu_ticks())
t = workers(lambda: torch.nn.functional.conv2d(x, w, padding=1))
n = workers(lambda: busy(data))
# a second OpenMP runtime would start threads of its own here; shared ones only look busy in both
print(pool.report()["numba_layer"], bool(n) and n <= t, set(cpu_ticks()) == threads)
"""
    out = in_a_fresh_process(code)
    assert out.split()[:3] == ["omp", "True", "True"], out


@linux_only
@pytest.mark.parametrize("warmed", [False, True])
def test_importing_the_kernels_warms_the_allocator(warmed):
    """After ``import kernels.pool`` a 3 MB array freed and allocated again reuses heap pages (no
    page faults the second time); a process that has not freed a large block gets fresh ones."""
    code = f"""
import resource, numpy as np
if {warmed}:
    import kernels.pool
faults = []
for _ in range(3):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    block = np.empty(3 << 20, np.uint8)
    block[::4096] = 1
    del block
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(faults[1])
"""
    faults = int(in_a_fresh_process(code).split()[0])
    assert (faults < 50) if warmed else (faults > 500), faults


def test_scratch_memory_is_reused_per_thread_and_never_returned():
    """Same memory for a name on one thread, other memory on another; results are not views of it."""
    import threading

    from kernels import workspace

    a = workspace.scratch("test.a", (4, 5), np.float32)
    b = workspace.scratch("test.a", (3, 2), np.float64)
    assert np.shares_memory(a, b) and b.flags.c_contiguous and b.shape == (3, 2)
    other = []
    thread = threading.Thread(target=lambda: other.append(workspace.scratch("test.a", (4, 5), np.float32)))
    thread.start()
    thread.join()
    assert not np.shares_memory(a, other[0])
    big = workspace.scratch("test.a", (workspace.LIMIT_BYTES // 4 + 1,), np.float32)
    assert not np.shares_memory(a, big)
    workspace.release()

    rng = np.random.default_rng(2)
    x1, x2 = rng.standard_normal((1, 4, 9, 9)), rng.standard_normal((1, 4, 9, 9))
    w = rng.standard_normal((3, 4, 3, 3))
    y1 = autotune.conv2d(x1, w, padding=1, method="winograd")
    y1_copy = y1.copy()
    autotune.conv2d(x2, w, padding=1, method="winograd")  # reuses the scratch memory of the first call
    np.testing.assert_array_equal(y1, y1_copy)


@pytest.mark.parametrize(
    ("text", "size"), [("2048K", 2 << 20), ("1M", 1 << 20), ("512", 512), ("1G", 1 << 30)]
)
def test_cache_sizes_read_as_linux_writes_them(text, size):
    from kernels import workspace

    assert workspace._size_bytes(text) == size


def test_the_core_cache_size_falls_back_where_the_os_does_not_say(monkeypatch, tmp_path):
    """The fused Winograd sizes its jobs from L2: what /sys says, else the documented default."""
    from kernels import workspace

    found = workspace.core_cache_bytes()
    assert 64 << 10 <= found <= 1 << 30  # what any L2 (or the default) measures
    monkeypatch.setattr(workspace, "Path", lambda _: tmp_path)  # an empty cache directory
    workspace.core_cache_bytes.cache_clear()
    try:
        assert workspace.core_cache_bytes() == workspace.DEFAULT_CORE_CACHE_BYTES
    finally:
        workspace.core_cache_bytes.cache_clear()


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.complex64, np.complex128])
@pytest.mark.parametrize("shape", [(1, 64, 56, 56), (3, 5, 7), (0, 4), (1,)])
def test_line_aligned_arrays_start_a_cache_line(shape, dtype):
    """What the streaming stores rely on: the first element on a 64-byte boundary, C-contiguous,
    writable, the shape and dtype asked for, and a fresh array on every call."""
    from kernels import workspace

    a, b = workspace.line_aligned_empty(shape, dtype), workspace.line_aligned_empty(shape, dtype)
    assert a.shape == shape and a.dtype == dtype and a.flags.c_contiguous and a.flags.writeable
    assert a.size == 0 or a.ctypes.data % workspace.LINE_BYTES == 0
    assert a.size == 0 or not np.shares_memory(a, b)


@linux_only
def test_the_tuners_accuracy_checks_wake_no_openblas_thread():
    """The error norms and the matmul oracle leave numpy's OpenBLAS workers asleep: woken, they
    spin for a while after the call and took the cores of the next timed runs (4 ms scheduler
    ticks, up to 30x on a 1 ms kernel). Threads that existed before any parallel work (numpy's
    OpenBLAS servers) must stay idle; PyTorch's workers, started later, may work."""
    code = """
import numpy as np, torch, autotune
from autotune.evaluate import rel_l2_error
from autotune.problem import parse_problem

rng = np.random.default_rng(0)
y, ref = rng.standard_normal(2_000_000), rng.standard_normal(2_000_000)
problem = parse_problem("matmul a=256x512 b=512x256")
operands = problem.random_inputs(rng)
before = cpu_ticks()
for _ in range(30):
    rel_l2_error(y, ref)
    problem.exact(operands)
after = cpu_ticks()
print(sorted(t for t in before if t != os.getpid() and after.get(t, 0) - before[t] >= 2))
"""
    out = in_a_fresh_process(code)
    assert out.split()[:1] == ["[]"], out


@linux_only
def test_the_svd_kernels_products_and_factorisations_wake_no_openblas_thread():
    """The svd matmul's thin GEMMs run on the one pool and its SVDs on the calling thread: numpy's
    threaded OpenBLAS there made the kernel and the next PyTorch convolution cost about 4x their
    separate times."""
    code = """
import numpy as np, torch, autotune
from kernels.matmul.lowrank import LowRank
from kernels.matmul.svd import svd

rng = np.random.default_rng(0)
a = rng.standard_normal((256, 1024), dtype=np.float32)
factors = LowRank(*(rng.standard_normal(shape, dtype=np.float32) for shape in [(1024, 64), (64,), (64, 1024)]))
before = cpu_ticks()
for _ in range(300):  # about 0.15 s of products
    svd(a, factors)
for _ in range(20):  # and 0.15 s of factorisations (a rank_A call does one each time)
    LowRank.from_matrix(a, 32)
after = cpu_ticks()
print(sorted(t for t in before if t != os.getpid() and after.get(t, 0) - before[t] >= 2))
"""
    out = in_a_fresh_process(code)
    assert out.split()[:1] == ["[]"], out


def test_fused_winograd_runs_openblas_on_its_jobs_threads_only():
    """The fused Winograd calls scipy's OpenBLAS (Numba's ``np.dot``) inside the pool's parallel
    region. Loaded by that first call, after :func:`pool.on_calling_thread` had listed the BLAS
    libraries to limit, scipy's OpenBLAS once ran with its own threads there: "OpenBLAS Warning:
    Detect OpenMP Loop" on every GEMM and its workers spinning beside PyTorch's. F(2×2) on 256
    channels: each job's GEMMs are large enough (25×256·256×256) for OpenBLAS to thread them."""
    code = """
import numpy as np, torch, autotune
from kernels import pool
from kernels.conv2d import winograd

pool.on_calling_thread(lambda: None)  # as any OpenBLAS call before the first fused one would
rng = np.random.default_rng(0)
x = rng.standard_normal((1, 256, 28, 28), dtype=np.float32)
w = rng.standard_normal((256, 256, 3, 3), dtype=np.float32)
y = winograd.winograd(x, w, None, (1, 1), (1, 1, 1, 1), (1, 1), 1, tile=2, fused=1)
ref = torch.nn.functional.conv2d(torch.from_numpy(x).double(), torch.from_numpy(w).double(), padding=1)
print("max error", float(np.abs(y - ref.numpy()).max() / np.abs(ref.numpy()).max()))
"""
    out = in_a_fresh_process(code)
    assert "max error" in out and float(out.split("max error")[1].split()[0]) < 1e-4, out
    assert "OpenBLAS" not in out, out


def _openblas_threads() -> list[int]:
    from threadpoolctl import threadpool_info

    return [info["num_threads"] for info in threadpool_info() if info["internal_api"] == "openblas"]


def test_on_calling_thread_limits_openblas_while_any_caller_runs_and_restores_it():
    """One thread for every OpenBLAS inside the call, nested or from two Python threads at once;
    the count the process had before once the last caller is out."""
    import threading

    pool.on_calling_thread(lambda: None)  # scipy's OpenBLAS (Numba's np.dot) loaded, as in a kernel
    before = _openblas_threads()
    assert len(before) >= 2
    inside: list[list[int]] = []
    release, entered = threading.Event(), threading.Event()

    def hold() -> None:
        entered.set()
        release.wait(10)
        inside.append(_openblas_threads())

    other = threading.Thread(target=lambda: pool.on_calling_thread(hold))
    other.start()
    entered.wait(10)
    inside.append(pool.on_calling_thread(lambda: pool.on_calling_thread(_openblas_threads)))
    inside.append(_openblas_threads())  # the other thread's call is still running
    release.set()
    other.join(10)
    assert all(counts == [1] * len(before) for counts in inside)
    assert _openblas_threads() == before
