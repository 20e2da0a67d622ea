"""The actors' building blocks on their own: the base class's dispatch and error guard,
and the node actor's bookkeeping (slots, runner pool, outbox), without Redis."""

from __future__ import annotations

import dataclasses
import queue
from typing import Any

import pytest

from jobgrove.actors.base import Actor, handles
from jobgrove.actors.ledger import Outbox, RunnerPool, Slots, undo_key
from jobgrove.actors.messages import ViewerClosed


@dataclasses.dataclass(frozen=True)
class Ping:
    n: int


@dataclasses.dataclass(frozen=True)
class Boom:
    pass


class Echo(Actor):
    def __init__(self, out: queue.SimpleQueue[Any]) -> None:
        super().__init__()
        self.out = out

    @handles(Ping)
    def _on_ping(self, message: Ping) -> None:
        self.out.put(message.n)

    @handles(Boom)
    def _on_boom(self, _message: Boom) -> None:
        raise RuntimeError("a bug in one handler")


class LoudEcho(Echo):
    @handles(Ping)
    def _on_loud_ping(self, message: Ping) -> None:
        self.out.put(message.n * 10)


def test_dispatch_by_type_survives_a_failing_handler_and_ignores_strangers() -> None:
    out: queue.SimpleQueue[Any] = queue.SimpleQueue()
    ref = Echo.start(out)
    try:
        ref.tell(Ping(1))
        ref.tell(Boom())  # logged, not fatal
        ref.tell("a stranger")  # nobody handles str: logged and dropped
        ref.tell(Ping(2))
        assert [out.get(timeout=5), out.get(timeout=5)] == [1, 2]
        assert ref.is_alive()
    finally:
        ref.stop(timeout=5)


def test_a_subclass_handler_replaces_its_parents() -> None:
    out: queue.SimpleQueue[Any] = queue.SimpleQueue()
    ref = LoudEcho.start(out)
    try:
        ref.tell(Ping(3))
        assert out.get(timeout=5) == 30
    finally:
        ref.stop(timeout=5)


def test_log_broadcast_survives_a_message_that_raises(tmp_path: Any) -> None:
    """A viewer whose ``id`` raises (a bug) costs one message, not the broadcast."""
    from jobgrove.endpoint.broadcast import LogBroadcast
    from jobgrove.endpoint.feeds import GrowthGate

    class Broken:
        @property
        def id(self) -> int:
            raise RuntimeError("broken viewer")

    requests: queue.SimpleQueue[Any] = queue.SimpleQueue()
    ref = LogBroadcast.start("n1", str(tmp_path), str(tmp_path), GrowthGate(),
                             lambda *a: None, lambda *a: None,
                             lambda what, arg: requests.put((what, arg)))
    try:
        ref.tell(ViewerClosed(Broken()))  # type: ignore[arg-type]
        # Still alive and handling messages: a resync asks for nothing (no watches) but
        # a proxy call proves the actor's loop goes on.
        assert ref.proxy().watches.get(timeout=5) == {}
        assert ref.is_alive()
    finally:
        ref.stop(timeout=5)


# -- slots ------------------------------------------------------------------------------
def test_slots_count_per_tree_and_free() -> None:
    slots: Slots[str] = Slots(3)
    slots.occupy("j1", "r1", "a1")
    slots.occupy("j2", "r1", "a2")
    slots.occupy(undo_key("j0"), "r2", "a3")
    assert (slots.used, slots.free) == (3, 0)
    assert slots.busy("r1") and slots.busy("r2") and not slots.busy("r3")
    assert sorted(slots.job_ids()) == ["j1", "j2"]  # undo hooks are not running jobs
    with pytest.raises(ValueError):
        slots.occupy("j1", "r1", "again")
    released = slots.release("j1")
    assert released is not None and (released.root, released.runner) == ("r1", "a1")
    assert slots.release("j1") is None  # a duplicate report
    assert slots.busy("r1")
    assert slots.release("j2") is not None
    assert not slots.busy("r1") and slots.free == 2
    assert sorted(slots.runners()) == ["a3"]


def test_runner_pool_reuses_idle_runners_and_retires_fenced_ones() -> None:
    started, stopped = [], []

    def start() -> str:
        started.append(f"r{len(started)}")
        return started[-1]

    pool: RunnerPool[str] = RunnerPool(2, start, stopped.append)
    a, b, c = pool.take(), pool.take(), pool.take()
    assert started == ["r0", "r1", "r2"]
    pool.give_back(a)
    pool.give_back(b, retire=True)  # its job ignored an abort: never reused
    pool.give_back(c)
    assert stopped == ["r1"] and sorted(pool.idle()) == ["r0", "r2"]
    taken = pool.take()
    assert taken in ("r0", "r2") and len(started) == 3
    pool.give_back("r9")
    pool.give_back("r8")  # beyond the pool size: stopped
    assert stopped == ["r1", "r8"]
    pool.stop_all()
    assert set(stopped) == {"r1", "r8", "r9", ({"r0", "r2"} - {taken}).pop()}
    assert pool.idle() == []


def test_outbox_keeps_order_puts_batches_back_in_front_and_remembers_given_up() -> None:
    box: Outbox[tuple[str, str]] = Outbox(lambda item: item[0])
    for job in ("j1", "j2"):
        box.add((job, "r1"))
    batch = box.take()
    assert batch == [("j1", "r1"), ("j2", "r1")] and len(box) == 0
    box.add(("j3", "r1"))
    box.put_back(batch)  # Redis could not take it: first in line again
    assert box.take() == [("j1", "r1"), ("j2", "r1"), ("j3", "r1")]
    box.give_up("j4", "r2")
    box.add(("j5", "r2"))
    assert box.job_ids() == {"j4", "j5"}
    box.forget_tree("r2")
    assert box.job_ids() == {"j5"}


class FakeStore:
    """What ``Outcomes`` and ``FailoverWatch`` ask of the store."""

    def __init__(self) -> None:
        self.sent: list[list[Any]] = []
        self.servers = frozenset({"run_id=a"})

    def finish_many(self, items: list[Any]) -> list[Any]:
        from jobgrove.messaging.records import Outcome, Verdict

        self.sent.append(items)
        return [Outcome(Verdict.OK, "SUCCESS") for _ in items]

    def identity(self) -> frozenset[str]:
        return self.servers


def test_outcomes_are_kept_and_recorded_again_after_a_failover() -> None:
    from jobgrove.actors.messages import JobDone
    from jobgrove.actors.outcomes import FailoverWatch, Outcomes
    from jobgrove.messaging.records import Claim, Holder

    clock = [100.0]
    store = FakeStore()
    outcomes = Outcomes(store, "n1", keep=30, clock=lambda: clock[0])  # type: ignore[arg-type]
    watch = FailoverWatch(store)  # type: ignore[arg-type]
    holder = Holder("n1", "i1", 1)
    claim = Claim("r", "j", "t1", {}, {}, {}, attempt=1, run=1)
    assert outcomes.started(claim)
    outcomes.add(JobDone("r", "j", "t1", True, "ok", {"x": 1}))
    outcomes.flush(False, holder)
    (item,) = store.sent[-1]
    assert (item.token, item.attempt, item.run, item.reporter) == ("t1", 1, 1, "n1")
    # The same run claimed again (the claim was lost): not run, its outcome goes again.
    assert not outcomes.started(dataclasses.replace(claim, token="t2"))
    outcomes.flush(False, holder)
    assert [(i.job_id, i.token, i.result) for i in store.sent[-1]] == [("j", "t2", {"x": 1})]
    # Another attempt is another run.
    assert outcomes.started(dataclasses.replace(claim, token="t3", attempt=2))
    outcomes.add(JobDone("r", "j", "t3", True, "ok"))
    outcomes.flush(False, holder)
    watch.check(outcomes)  # the first look: nothing to compare with
    store.servers = frozenset({"run_id=b"})  # a failover
    assert watch.check(outcomes) and len(outcomes) == 1
    outcomes.flush(False, holder)
    assert [(i.token, i.attempt) for i in store.sent[-1]] == [("t3", 2)]
    clock[0] += 31
    watch.check(outcomes)  # the same servers for 30 s: forgotten
    assert outcomes.runs == {} and outcomes.replay_all() == 0
