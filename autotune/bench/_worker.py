"""One side of ``autotune bench --vs-torch``, run as a script in a process of its own.

``side=torch`` is what a user would run instead of autotune: ``torch.nn.functional.conv2d`` (or
the plain model) in a process that never imports autotune, with PyTorch's defaults.
``side=imported`` runs the torch side's calls in a process that imported autotune and ran each
of its Numba kernels once (what having autotune around costs them). ``side=autotune`` calls
``autotune.conv2d`` (or the ``autotune.nn.convert``-ed model), tuning
on first sight into the database named by ``AUTOTUNE_CACHE_DIR``, after importing torch or
autotune first as asked. The parent (:mod:`autotune.bench.versus`) sends one JSON request per line
on stdin and reads one JSON reply per line on stdout.

Run by path (not ``-m``), so the torch side never imports the ``autotune`` package.
"""

from __future__ import annotations

import importlib.util
import json
import resource
import sys
import time
from typing import Any

sys.path.pop(0)  # the script's folder (autotune/) must not shadow top-level modules


def timed_runs(call: Any, min_runs: int, min_time_s: float) -> list[tuple[float, bool, int]]:
    """(wall µs, preempted, minor page faults) of repeated calls, as ``autotune.timing.run_once``
    measures them."""
    samples: list[tuple[float, bool, int]] = []
    start = time.perf_counter()
    while len(samples) < min_runs or time.perf_counter() - start < min_time_s:
        before = resource.getrusage(resource.RUSAGE_SELF)
        t0 = time.perf_counter_ns()
        call()
        wall_us = (time.perf_counter_ns() - t0) / 1e3
        after = resource.getrusage(resource.RUSAGE_SELF)
        samples.append((wall_us, after.ru_nivcsw != before.ru_nivcsw, after.ru_minflt - before.ru_minflt))
    return samples


def run_each_kernel_once() -> None:
    """Import autotune and call each of its Numba conv kernels once (their threads now exist)."""
    import numpy as np

    import autotune

    rng = np.random.default_rng(0)
    x = rng.standard_normal((1, 16, 20, 20), dtype=np.float32)
    w = rng.standard_normal((16, 16, 3, 3), dtype=np.float32)
    for method in ("direct", "im2col", "winograd", "fft", "torch"):
        autotune.conv2d(x, w, padding=1, method=method)


#: What :func:`warm_heap` allocates: under glibc's largest mmap threshold (32 MiB on 64-bit).
WARM_HEAP_BYTES = 30 << 20


def warm_heap() -> None:
    """Allocate and free one block of :data:`WARM_HEAP_BYTES`. glibc serves an allocation above
    its mmap threshold (128 KiB at start) with fresh pages from the OS, faulted in on every call;
    freeing one such block raises the threshold to its size, as a process that has run its model
    once has done (BENCHMARKS.md §18). Both sides of a ``--warm-heap`` run do this first."""
    import numpy as np

    block = np.empty(WARM_HEAP_BYTES, np.uint8)
    block[:: 1 << 12] = 0
    del block


def load_factory(spec: str) -> Any:
    """``path/to/file.py:factory`` → the factory function."""
    path, _, name = spec.rpartition(":")
    module_spec = importlib.util.spec_from_file_location("_versus_model", path)
    module = importlib.util.module_from_spec(module_spec)  # type: ignore[arg-type]
    module_spec.loader.exec_module(module)  # type: ignore[union-attr]
    return getattr(module, name)


class Side:
    """The calls one process times: layer convolutions or a whole model's forward pass."""

    def __init__(self, request: dict[str, Any]) -> None:
        side, first = request["side"], request.get("import_first", "torch")
        if request.get("warm_heap"):
            warm_heap()
        if side in ("autotune", "imported") and first == "autotune":
            import autotune
        import torch

        self.torch = torch
        self.autotune = None
        if side == "autotune":
            import autotune

            self.autotune = autotune
        if side == "imported":
            run_each_kernel_once()
        torch.manual_seed(request.get("seed", 0))
        self.keys = [problem["key"] for problem in request.get("problems", [])]
        self.calls = self._model_calls(request) if request.get("model") else self._conv_calls(request)

    def _model_calls(self, request: dict[str, Any]) -> list[Any]:
        torch = self.torch
        model = load_factory(request["model"])().eval()
        x = torch.randn(*request["input"])
        if self.autotune is not None:
            import autotune.nn

            model = autotune.nn.convert(model)

        def forward() -> Any:
            with torch.no_grad():
                return model(x)

        return [forward]

    def _conv_calls(self, request: dict[str, Any]) -> list[Any]:
        return [self._conv_call(problem) for problem in request["problems"]]

    def _conv_call(self, problem: dict[str, Any]) -> Any:
        torch = self.torch
        dtype = getattr(torch, problem.get("dtype", "float32"))
        x = torch.randn(*problem["x_shape"], dtype=dtype)
        w = torch.randn(*problem["w_shape"], dtype=dtype)
        if problem.get("weight") == "fixed":  # a layer's weight: both sides get a Parameter
            w = torch.nn.Parameter(w, requires_grad=False)
        b = torch.randn(problem["w_shape"][0], dtype=dtype)
        top, bottom, left, right = problem["padding"]
        if (top, left) != (bottom, right):  # both sides take an asymmetric padding as padded input
            x = torch.nn.functional.pad(x, (left, right, top, bottom))
            top = left = 0
        args = {
            "stride": tuple(problem["stride"]),
            "padding": (top, left),
            "dilation": tuple(problem["dilation"]),
            "groups": problem["groups"],
        }
        conv = torch.nn.functional.conv2d if self.autotune is None else self.autotune.conv2d

        def call() -> Any:
            with torch.no_grad():
                return conv(x, w, b, **args)

        return call

    def warm_up(self) -> dict[str, Any]:
        """One call each (tunes on a database miss), then the picks and tuner timings."""
        started = time.perf_counter()
        for call in self.calls:
            call()
            call()
        reply: dict[str, Any] = {"setup_s": time.perf_counter() - started}
        if self.autotune is not None:
            try:
                from kernels import pool

                reply["threads"] = pool.report()
            except ImportError:  # an autotune from before the one pool (a baseline run)
                reply["threads"] = {}
            reply["entries"] = self._entries()
        return reply

    def _entries(self) -> dict[str, Any]:
        """Per problem key: the database's choice and the tuner's in-process torch timing."""
        from autotune import state

        found = {}
        for key in self.keys:
            entry = state.database().lookup(key) or {}
            torch_record = (entry.get("candidates") or {}).get("torch") or {}
            label = entry.get("choice", "?")
            if entry.get("params"):
                label += "(" + ",".join(f"{k}={v}" for k, v in entry["params"].items()) + ")"
            found[key] = {
                "pick": label,
                "tuner_torch_us": torch_record.get("score_us", torch_record.get("median_us")),
            }
        return found


def serve() -> None:
    side: Side | None = None
    for line in sys.stdin:
        request = json.loads(line)
        if request["op"] == "setup":
            side = Side(request)
            reply = side.warm_up()
        elif request["op"] == "time":
            call = side.calls[request["index"]]  # type: ignore[union-attr]
            reply = {"samples": timed_runs(call, request["min_runs"], request["min_time_s"])}
        else:
            return
        print(json.dumps(reply), flush=True)


if __name__ == "__main__":
    serve()
