"""Inference leaves the process's BLAS threads as it found them, also when calls overlap,
and never starts more threads than the CPUs the process may use."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from threadpoolctl import threadpool_info, threadpool_limits

from calcomp_caiman.model import cpus as cpus_module
from calcomp_caiman.model import folder as model_module


def blas_threads() -> list[tuple[str, int]]:
    return sorted(
        (i["filepath"], i["num_threads"]) for i in threadpool_info() if i["user_api"] == "blas"
    )


def patches(n: int = 300) -> np.ndarray:
    return np.random.default_rng(0).random((n, 50, 50), dtype=np.float32)


@pytest.fixture
def two_blas_threads():
    """BLAS at two threads, so that a leaked "one thread" shows."""
    with threadpool_limits(limits=2, user_api="blas"):
        yield blas_threads()


@pytest.fixture
def recorded_workers(monkeypatch) -> list[int | None]:
    """``max_workers`` of every thread pool predict starts."""
    seen = []
    real = model_module.ThreadPoolExecutor

    def recording(max_workers=None, **kwargs):
        seen.append(max_workers)
        return real(max_workers=max_workers, **kwargs)

    monkeypatch.setattr(model_module, "ThreadPoolExecutor", recording)
    return seen


def test_predict_leaves_blas_threads_unchanged(tiny_model, two_blas_threads):
    tiny_model.predict(patches(), batch_size=32)
    assert blas_threads() == two_blas_threads
    tiny_model.predict(patches(), batch_size=32, threads=1)
    assert blas_threads() == two_blas_threads


def test_interleaved_calls_restore_the_callers_setting(tiny_model, two_blas_threads, monkeypatch):
    """A enters, B enters, A leaves, B leaves: B must not restore the "1" A set."""
    b_running, a_done = threading.Event(), threading.Event()
    real_logits = model_module.Engine.logits

    def logits(self, batch):
        if threading.current_thread().name == "A":
            b_running.wait(timeout=10)
        else:
            b_running.set()
            a_done.wait(timeout=10)
        return real_logits(self, batch)

    monkeypatch.setattr(model_module.Engine, "logits", logits)
    data = patches(8)

    def call_a():
        tiny_model.predict(data, threads=1)
        a_done.set()

    a = threading.Thread(target=call_a, name="A")
    b = threading.Thread(target=tiny_model.predict, args=(data,), kwargs={"threads": 1})
    a.start()
    b.start()
    a.join()
    b.join()
    assert a_done.is_set() and b_running.is_set()
    assert blas_threads() == two_blas_threads


def test_overlapping_calls_restore_the_callers_setting(tiny_model, two_blas_threads):
    data = patches()
    with ThreadPoolExecutor(max_workers=4) as pool:
        for _ in range(3):
            list(pool.map(lambda _: tiny_model.predict(data, batch_size=16), range(8)))
            assert blas_threads() == two_blas_threads


def test_one_cpu_runs_in_the_calling_thread(tiny_model, monkeypatch, recorded_workers):
    monkeypatch.setattr(cpus_module.os, "sched_getaffinity", lambda pid: {0}, raising=False)
    assert cpus_module.available_cpus() == 1
    tiny_model.predict(patches(100), batch_size=10)
    assert recorded_workers == []


def test_threads_caps_the_workers(tiny_model, monkeypatch, recorded_workers):
    six = {0, 1, 2, 3, 4, 5}
    monkeypatch.setattr(cpus_module.os, "sched_getaffinity", lambda pid: six, raising=False)
    monkeypatch.setattr(cpus_module, "_cgroup_cpu_limit", lambda: None)
    tiny_model.predict(patches(100), batch_size=10, threads=3)
    assert recorded_workers == [3]
    tiny_model.predict(patches(100), batch_size=10, threads=1)
    assert recorded_workers == [3]


def test_threads_never_exceed_available_cpus(tiny_model, monkeypatch, recorded_workers):
    monkeypatch.setattr(cpus_module.os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    monkeypatch.setattr(cpus_module, "_cgroup_cpu_limit", lambda: None)
    running, most = set(), [0]
    lock = threading.Lock()
    real_logits = model_module.Engine.logits

    def logits(self, batch):
        with lock:
            running.add(threading.get_ident())
            most[0] = max(most[0], len(running))
        return real_logits(self, batch)

    monkeypatch.setattr(model_module.Engine, "logits", logits)
    tiny_model.predict(patches(100), batch_size=10, threads=8)
    assert recorded_workers == [2]
    assert most[0] <= 2


@pytest.mark.parametrize(
    ("cpu_max", "expected"),
    [("max 100000\n", 6), ("200000 100000\n", 2), ("150000 100000\n", 2), ("5000 100000\n", 1)],
)
def test_cgroup_quota_caps_the_cpus(cpu_max, expected, monkeypatch, tmp_path):
    """The quota of the container's cgroup (the root of the walk up from the process's own)."""
    (tmp_path / "cpu.max").write_text(cpu_max)
    monkeypatch.setattr(cpus_module, "_CGROUP_ROOT", tmp_path)
    six = set(range(6))
    monkeypatch.setattr(cpus_module.os, "sched_getaffinity", lambda pid: six, raising=False)
    assert cpus_module.available_cpus() == expected
