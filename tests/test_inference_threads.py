"""Inference leaves the process's BLAS threads as it found them, also when calls overlap,
and never starts more threads than the CPUs the process may use."""

import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from threadpoolctl import threadpool_info, threadpool_limits

from calcomp_caiman import model as model_module


def blas_threads():
    return sorted(
        (i["filepath"], i["num_threads"]) for i in threadpool_info() if i["user_api"] == "blas"
    )


def patches(n=300):
    return np.random.default_rng(0).random((n, 50, 50), dtype=np.float32)


def test_predict_leaves_blas_threads_unchanged(tiny_model):
    with threadpool_limits(limits=2, user_api="blas"):
        before = blas_threads()
        tiny_model.predict(patches(), batch_size=32)
        assert blas_threads() == before


def test_overlapping_calls_restore_the_callers_setting(tiny_model):
    with threadpool_limits(limits=2, user_api="blas"):
        before = blas_threads()
        data = patches()
        with ThreadPoolExecutor(max_workers=4) as pool:
            for _ in range(3):
                list(pool.map(lambda _: tiny_model.predict(data, batch_size=16), range(8)))
        assert blas_threads() == before


def test_threads_sized_from_available_cpus(tiny_model, monkeypatch):
    seen = []
    real = model_module.ThreadPoolExecutor

    def recording(max_workers=None, **kwargs):
        seen.append(max_workers)
        return real(max_workers=max_workers, **kwargs)

    monkeypatch.setattr(model_module, "ThreadPoolExecutor", recording)
    monkeypatch.setattr(model_module.os, "sched_getaffinity", lambda pid: {0}, raising=False)
    tiny_model.predict(patches(100), batch_size=10)
    assert seen == []  # one CPU: batches run in the calling thread
    monkeypatch.setattr(model_module.os, "sched_getaffinity", lambda pid: {0, 1, 2, 3, 4, 5})
    tiny_model.predict(patches(100), batch_size=10, threads=3)
    assert seen and max(seen) <= 3
    assert model_module.available_cpus() <= 6
    assert threading.active_count() < 20
