from __future__ import annotations

import threading
import time

from synapse_ray.executors.runners import Runners


def _wait_until(predicate, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.005)
    return predicate()


def test_a_finished_runs_thread_carries_the_next_run():
    runners = Runners(idle_s=30.0)
    seen: list[int] = []
    done = threading.Event()

    def first() -> None:
        seen.append(threading.get_ident())

    def second() -> None:
        seen.append(threading.get_ident())
        done.set()

    runners.start(first)
    assert _wait_until(lambda: runners.idle() == 1)
    runners.start(second)
    assert done.wait(5)
    assert seen[0] == seen[1]  # the same thread, no new one started
    assert runners.idle() in (0, 1)


def test_runs_at_once_each_get_a_thread_and_idle_threads_leave():
    runners = Runners(idle_s=0.2)
    gate = threading.Event()
    started = threading.Semaphore(0)
    threads: set[int] = set()
    daemons: list[bool] = []
    lock = threading.Lock()

    def work() -> None:
        with lock:
            threads.add(threading.get_ident())
            daemons.append(threading.current_thread().daemon)  # never holds a script open at exit
        started.release()
        gate.wait(5)

    for _ in range(3):
        runners.start(work)
    for _ in range(3):
        assert started.acquire(timeout=5)  # all three run together: none waits for another
    assert len(threads) == 3 and daemons == [True, True, True]
    gate.set()
    assert _wait_until(lambda: runners.idle() == 3)
    assert _wait_until(lambda: runners.idle() == 0)  # after idle_s with no work, they exit
    assert _wait_until(lambda: not any(t.ident in threads for t in threading.enumerate()))


def test_work_put_for_an_idle_thread_is_never_lost():
    runners = Runners(idle_s=0.01)  # threads time out while work is being handed over
    ran = threading.Semaphore(0)
    for _ in range(200):
        runners.start(ran.release)
    for _ in range(200):
        assert ran.acquire(timeout=5)
