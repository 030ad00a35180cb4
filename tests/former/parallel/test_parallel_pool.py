"""former.parallel's pool: same answers as serial code, tensors through shared memory,
and a clear exception, never a hang, when a worker fails.

The functions the workers run are defined at the top of this module: workers
started with forkserver import it by name, as they would a learner's
``my_transformer_model``.
"""

from __future__ import annotations

import multiprocessing.connection
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from former.attention import sdpa_attention
from former.parallel import (
    PoolAttention,
    PoolTimeoutError,
    RemoteTraceback,
    SerialPool,
    UnpicklableFunctionError,
    UnpicklableItemError,
    WorkerDiedError,
    make_pool,
    worker,
)
from former.parallel.pool import check_start_method, default_start_method, split_evenly
from solutions.attention import multihead_attention, parallel_multihead_attention

FAILURE_SECONDS = 10  # a failure must surface this fast (pytest-timeout catches a hang)


def identity(item):
    return item


def square(x):
    return x * x


def fail_on_three(x):
    if x == 3:
        raise ValueError(f"item {x} is not welcome")
    return x


def exit_on_three(x):
    if x == 3:
        os._exit(7)
    return x


def kill_self(signum):
    os.kill(os.getpid(), signum)


def sleep_for(seconds):
    time.sleep(seconds)
    return seconds


def ones_of_length(n):
    return torch.ones(n)


def thread_count(_):
    return torch.get_num_threads(), os.environ.get("OMP_NUM_THREADS")


def where_and_threads(_):
    return os.getpid(), torch.get_num_threads()


@pytest.fixture(scope="module")
def pool():
    with make_pool(2) as pool:
        yield pool


def heads_input(b, t, heads, s, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return [torch.randn(b, t, heads * s, generator=generator) for _ in range(3)]


# -- same answers as serial code ----------------------------------------------------------


@settings(max_examples=15, deadline=None)
@given(
    b=st.integers(1, 3),
    t=st.integers(1, 40),
    heads=st.integers(1, 6),
    s=st.integers(1, 8),
    mask=st.booleans(),
)
def test_pool_attention_equals_serial(pool, b, t, heads, s, mask):
    q, k, v = heads_input(b, t, heads, s)
    serial = PoolAttention(SerialPool())(q, k, v, heads, mask)
    parallel = PoolAttention(pool)(q, k, v, heads, mask)
    torch.testing.assert_close(parallel, serial, atol=1e-6, rtol=0)
    torch.testing.assert_close(parallel, sdpa_attention(q, k, v, heads, mask), atol=1e-6, rtol=0)


@pytest.mark.parametrize("mask", [False, True])
def test_learner_parallel_function_runs_unchanged(pool, mask):
    q, k, v = heads_input(2, 33, 8, 4, seed=1)
    out = parallel_multihead_attention(q, k, v, 8, mask, pool)
    torch.testing.assert_close(out, multihead_attention(q, k, v, 8, mask), atol=1e-6, rtol=0)


def test_map_keeps_order_and_plain_items(pool):
    assert pool.map(square, range(11)) == [x * x for x in range(11)]
    assert pool.map(square, []) == []
    assert pool.map(square, [5]) == [25]


def test_tensors_of_every_kind_round_trip(pool):
    base = torch.arange(24, dtype=torch.float64).reshape(4, 6)
    item = {
        "non_contiguous": base.t(),
        "slice": base[:, 2:4],
        "bool": torch.tensor([True, False, True]),
        "int": torch.arange(5),
        "scalar": torch.tensor(3.5),
        "empty": torch.empty(0, 3),
        "half": torch.ones(3, dtype=torch.float16),
        "same_twice": (base, base),
        "text": "kept",
    }
    (back,) = pool.map(identity, [item])
    for key, value in item.items():
        if isinstance(value, torch.Tensor):
            assert back[key].dtype == value.dtype and back[key].shape == value.shape
            assert torch.equal(back[key], value), key
    assert torch.equal(back["same_twice"][1], base) and back["text"] == "kept"

    # Results belong to the caller: the next call must not overwrite them.
    first = pool.map(identity, [torch.zeros(1000)])[0]
    pool.map(identity, [torch.ones(1000)])
    assert torch.count_nonzero(first) == 0


def test_results_larger_than_inputs_still_arrive(pool):
    for _ in range(2):  # the first call spills into the pipe, the second has a bigger arena
        results = pool.map(ones_of_length, [300_000, 600_000, 5])
        assert [r.numel() for r in results] == [300_000, 600_000, 5]
        assert all(torch.all(r == 1) for r in results)


def test_tensors_travel_through_shared_memory(pool, monkeypatch):
    heads = [torch.randn(256, 1024) for _ in range(8)]  # 1 MiB each
    pool.map(identity, heads)  # warm: arenas allocated
    moved = {"pipe": 0, "shared": 0}

    def counted(method, key, size):
        def wrapper(*args, **kwargs):
            result = method(*args, **kwargs)
            moved[key] += size(args, result)
            return result

        return wrapper

    connection = multiprocessing.connection.Connection
    pipe_in = counted(connection.send_bytes, "pipe", lambda args, _: len(args[1]))
    pipe_out = counted(connection.recv_bytes, "pipe", lambda _, data: len(data))
    shared_in = counted(worker.copy_in, "shared", lambda args, _: args[1].end)
    shared_out = counted(worker.unpack, "shared", lambda _, out: sum(t.nbytes for t in out))
    monkeypatch.setattr(connection, "send_bytes", pipe_in)
    monkeypatch.setattr(connection, "recv_bytes", pipe_out)
    monkeypatch.setattr(worker, "copy_in", shared_in)
    monkeypatch.setattr(worker, "unpack", shared_out)
    results = pool.map(identity, heads)
    pipe, shared = moved["pipe"], moved["shared"]
    assert all(torch.equal(a, b) for a, b in zip(results, heads, strict=True))
    assert shared >= 2 * 8 * 2**20  # there and back
    assert pipe < 20_000, f"{pipe} bytes went through pipes"


def test_workers_use_one_thread(pool):
    assert set(pool.map(thread_count, range(4))) == {(1, "1")}


def test_split_evenly_covers_items_in_order():
    assert split_evenly(8, 2) == [(0, 4), (4, 8)]
    assert split_evenly(5, 2) == [(0, 3), (3, 5)]
    assert split_evenly(1, 4) == [(0, 1)]
    for n, parts in ((6, 4), (7, 3), (13, 5)):  # the caller's last batch is never the largest
        sizes = [stop - start for start, stop in split_evenly(n, parts)]
        assert sum(sizes) == n and max(sizes) - min(sizes) <= 1 and sizes[-1] == min(sizes)


# -- failures: clear and fast -------------------------------------------------------------


def assert_fast(start):
    assert time.monotonic() - start < FAILURE_SECONDS


@pytest.mark.timeout(60)
def test_exception_in_worker_is_reraised_with_its_traceback(pool):
    start = time.monotonic()
    with pytest.raises(ValueError, match="item 3 is not welcome") as caught:
        pool.map(fail_on_three, range(8))
    assert_fast(start)
    assert isinstance(caught.value.__cause__, RemoteTraceback)
    assert "fail_on_three" in str(caught.value.__cause__)
    assert any("on item 3" in note for note in getattr(caught.value, "__notes__", ["on item 3"]))
    assert pool.map(fail_on_three, [1, 2]) == [1, 2]  # workers are still fine


@pytest.mark.timeout(60)
def test_worker_that_exits_raises_worker_died(pool):
    start = time.monotonic()
    with pytest.raises(WorkerDiedError, match=r"exit_on_three on items 0-3: .*exited with code 7"):
        pool.map(exit_on_three, range(8))
    assert_fast(start)
    assert pool.map(square, [2, 3]) == [4, 9]  # fresh workers replace the dead ones


@pytest.mark.timeout(60)
@pytest.mark.parametrize(
    ("signum", "words"),
    [(signal.SIGSEGV, "segmentation fault"), (signal.SIGKILL, "out-of-memory")],
)
def test_worker_killed_by_signal_raises_worker_died(pool, signum, words):
    start = time.monotonic()
    with pytest.raises(WorkerDiedError, match=words):
        pool.map(kill_self, [signum])
    assert_fast(start)
    assert pool.map(square, [3]) == [9]


def local_function_factory():
    def head(args):
        return args

    return head


@pytest.mark.timeout(60)
@pytest.mark.parametrize(
    "fn", [lambda args: args, local_function_factory()], ids=["lambda", "nested"]
)
def test_unpicklable_function_is_named_and_explained(pool, fn):
    start = time.monotonic()
    with pytest.raises(UnpicklableFunctionError) as caught:
        pool.map(fn, [torch.ones(2)])
    assert_fast(start)
    message = str(caught.value)
    assert fn.__qualname__ in message and "%%writefile" in message


@pytest.mark.timeout(60)
def test_unpicklable_item_is_named(pool):
    with pytest.raises(UnpicklableItemError, match="item 2"):
        pool.map(identity, [1, 2, lambda: 3])


@pytest.mark.timeout(60)
def test_timeout_raises_and_pool_recovers(pool):
    start = time.monotonic()
    with pytest.raises(PoolTimeoutError, match="sleep_for"):
        pool.map(sleep_for, [30, 30], timeout=1)
    assert_fast(start)
    assert pool.map(square, [4]) == [16]


@pytest.mark.timeout(60)
def test_close_stops_workers_and_refuses_work():
    pool = make_pool(1)
    (pid,) = pool.pids
    pool.close()
    with pytest.raises(ValueError, match="not running"):
        pool.map(square, [1])
    deadline = time.monotonic() + FAILURE_SECONDS
    while time.monotonic() < deadline and pid_alive(pid):
        time.sleep(0.05)
    assert not pid_alive(pid)


def pid_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


# -- start methods ------------------------------------------------------------------------


def test_fork_is_refused_on_macos_and_spawn_is_the_default_there(monkeypatch):
    monkeypatch.setattr("sys.platform", "darwin")
    assert default_start_method() == "spawn"
    with pytest.raises(ValueError, match="macOS"):
        check_start_method("fork")


def test_forkserver_is_the_linux_default(monkeypatch):
    monkeypatch.setattr("sys.platform", "linux")
    assert default_start_method() == "forkserver"


def test_unknown_start_method_is_rejected():
    with pytest.raises(ValueError, match="Unknown start method .thread."):
        make_pool(1, "thread")


# -- persistent workers follow edits ------------------------------------------------------


@pytest.mark.timeout(60)
def test_workers_pick_up_an_edited_module(tmp_path, monkeypatch):
    # A learner fixes attention_function with %%writefile and maps it again.
    import importlib

    module_file = tmp_path / "edited_heads.py"
    module_file.write_text("def value(_):\n    return 1\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    import edited_heads

    with make_pool(1) as pool:
        assert pool.map(edited_heads.value, [0]) == [1]
        module_file.write_text("def value(_):\n    return 2\n")
        stat = module_file.stat()
        os.utime(module_file, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
        edited_heads = importlib.reload(edited_heads)
        assert pool.map(edited_heads.value, [0]) == [2]


@pytest.mark.timeout(60)
def test_worker_killed_between_calls_raises_then_recovers():
    with make_pool(2) as pool:
        os.kill(pool.pids[1], signal.SIGKILL)
        time.sleep(0.2)
        with pytest.raises(WorkerDiedError, match="SIGKILL"):
            pool.map(square, range(4))
        assert pool.map(square, range(4)) == [0, 1, 4, 9]


# -- the caller computes a share too ------------------------------------------------------


@pytest.fixture(scope="module")
def caller_pool():
    with make_pool(2, include_caller=True) as pool:
        yield pool


def test_caller_pool_has_one_worker_and_computes_the_last_batch_itself(caller_pool):
    assert len(caller_pool.pids) == 1 and caller_pool.processes == 2
    assert "include_caller=True" in repr(caller_pool)
    before = torch.get_num_threads()
    places = caller_pool.map(where_and_threads, range(5))
    worker = caller_pool.pids[0]
    # 5 items on 2 processes: the worker takes 3, the caller (with one thread) the last 2
    assert places == [(worker, 1)] * 3 + [(os.getpid(), 1)] * 2
    assert torch.get_num_threads() == before  # the caller's thread count is restored


@settings(max_examples=10, deadline=None)
@given(b=st.integers(1, 3), t=st.integers(1, 40), heads=st.integers(1, 6), mask=st.booleans())
def test_caller_pool_attention_equals_serial_forward_and_backward(caller_pool, b, t, heads, mask):
    q, k, v = (x.requires_grad_() for x in heads_input(b, t, heads, 4))
    out = PoolAttention(caller_pool)(q, k, v, heads, mask)
    torch.testing.assert_close(out, sdpa_attention(q, k, v, heads, mask), atol=1e-6, rtol=0)
    grads = torch.autograd.grad(out.sum(), (q, k, v))
    expected = torch.autograd.grad(sdpa_attention(q, k, v, heads, mask).sum(), (q, k, v))
    for got, want in zip(grads, expected, strict=True):
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


@pytest.mark.timeout(60)
def test_exception_in_the_callers_share_names_the_caller_and_keeps_workers_in_step(caller_pool):
    with pytest.raises(ValueError, match="item 3 is not welcome") as caught:
        caller_pool.map(fail_on_three, range(4))  # items 0-1 in the worker, 2-3 here
    assert any("in the calling process" in note for note in caught.value.__notes__)
    assert caller_pool.map(square, range(6)) == [x * x for x in range(6)]


@pytest.mark.timeout(60)
def test_a_workers_error_wins_over_the_callers_as_it_comes_first(caller_pool):
    with pytest.raises(ValueError, match="item 3") as caught:
        caller_pool.map(fail_on_three, [3, 3])  # one item each
    assert isinstance(caught.value.__cause__, RemoteTraceback)  # raised in the worker


def test_a_pool_of_one_with_the_caller_starts_no_worker():
    with make_pool(1, include_caller=True) as pool:
        assert pool.pids == []
        assert pool.map(where_and_threads, range(3)) == [(os.getpid(), 1)] * 3
        with pytest.raises(UnpicklableFunctionError):  # as it would with workers
            pool.map(lambda x: x, [1])


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="no CPU affinity on this OS")
def test_cores_are_counted_as_the_process_may_use_them():
    """A hub or container that pins the kernel to one core gets one, whatever the machine has."""
    code = (
        "import os; os.sched_setaffinity(0, {min(os.sched_getaffinity(0))}); "
        "from former.parallel import available_cpus; print(available_cpus())"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "1"
