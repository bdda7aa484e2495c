"""The intake and processor threads with a real journal and an in-process fake pipeline."""

import queue
import time

from cems.ingest.message import Message
from cems.ingest.pipeline import Outcome
from cems.ingest.processor import Intake, Processor
from cems.store.influx import InfluxError
from cems.store.journal import Journal


class FakePipeline:
    def __init__(self):
        self.handled: list[bytes] = []
        self.flushed: list[int] = []  # handled count at each successful flush
        self.fail_flushes = 0
        self.ticks = 0
        self.minute_ticks = 0
        self.deadletters = None

    def start(self, now):
        pass

    def handle(self, msg, now):
        if msg.payload == b"boom":
            raise ValueError("a bug")
        self.handled.append(msg.payload)
        return Outcome(accepted=1)

    def handle_batch(self, msgs, now):
        if any(m.payload == b"boom" for m in msgs):
            raise ValueError("a bug")  # before anything is handled, so the one-by-one retry is seen alone
        return [self.handle(m, now) for m in msgs]

    def flush(self, on_done=None):
        if self.fail_flushes:
            self.fail_flushes -= 1
            raise InfluxError("disk or database trouble")
        self.flushed.append(len(self.handled))
        if on_done is not None:
            on_done()

    def tick(self, now):
        self.ticks += 1

    def close_minutes(self, now):
        self.minute_ticks += 1


class Dead:
    def __init__(self):
        self.records = []

    def record(self, **kw):
        self.records.append(kw)


def wait(cond, timeout=10.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return True
        time.sleep(0.02)
    return False


def test_messages_are_journaled_acked_handled_flushed_then_checkpointed(tmp_path):
    j = Journal(tmp_path)
    inbox = queue.Queue()
    acked = []
    intake = Intake(inbox, j, ack=acked.extend)
    pipe = FakePipeline()
    pipe.deadletters = Dead()
    proc = Processor(pipe, j, tick_s=0.2, minute_tick_s=0.05)
    proc.wake.set()
    intake.start()
    proc.start()
    try:
        for i in range(5):
            inbox.put(Message("cems/v1/p/s/readings", f"m{i}".encode(), time.time(), mid=i, qos=1))
        assert wait(lambda: len(pipe.handled) == 5 and j.status()["unprocessed"] == 0)
        assert [m.mid for m in acked] == [0, 1, 2, 3, 4]
        assert pipe.flushed and pipe.flushed[-1] == 5
        # A failing flush holds the checkpoint back (the journal keeps the messages) and is retried;
        # a message that trips a bug goes to the dead-letter store; the thread carries on through both.
        pipe.fail_flushes = 2
        inbox.put(Message("cems/v1/p/s/readings", b"boom", time.time()))
        inbox.put(Message("cems/v1/p/s/readings", b"m5", time.time()))
        assert wait(lambda: pipe.handled[-1:] == [b"m5"])
        assert wait(lambda: j.status()["unprocessed"] == 0, 15)
        assert pipe.fail_flushes == 0 and pipe.flushed[-1] == 6
        assert [r["reason"] for r in pipe.deadletters.records] == ["internal error: ValueError: a bug"]
        assert proc.is_alive()
        assert wait(lambda: pipe.ticks > 0 and pipe.minute_ticks > pipe.ticks)  # minutes close more often
    finally:
        intake.stop()
        proc.stop()


def test_after_a_crash_the_unflushed_batch_is_handled_again(tmp_path):
    j = Journal(tmp_path)
    j.append([Message("t", b"a", 1.0), Message("t", b"b", 2.0)])
    j.close()
    j = Journal(tmp_path)  # nothing was checkpointed: both come back
    pipe = FakePipeline()
    proc = Processor(pipe, j, tick_s=0.05)
    proc.start()
    try:
        assert wait(lambda: pipe.handled == [b"a", b"b"] and j.status()["unprocessed"] == 0)
    finally:
        proc.stop()


class WaitingPipeline(FakePipeline):
    """`Pipeline.handle_batch`'s waiting, with the topic as the stack: a `wait` message needs a read from the
    store, which fails while `down` (and is then paused for a moment); it and its stack's later messages
    wait (outcome None) until handed back after `retry_waiting`, while the other stacks go on."""

    def __init__(self):
        super().__init__()
        self.down = True
        self.hold = False  # keep flushes' `on_done` (a writer still storing them) until `release`
        self.held: list = []
        self.waiting: set[str] = set()
        self.paused_until = 0.0
        self.reads = 0
        self.boom = 0  # flushes to fail with an unexpected error

    def reads_paused(self, now):
        return now < self.paused_until

    def retry_waiting(self):
        self.waiting.clear()

    def resume_reads(self):
        self.paused_until = 0.0

    def handle_batch(self, msgs, now):
        outs = []
        for m in msgs:
            if m.topic not in self.waiting and m.payload == b"wait":
                self.reads += 1
                if self.down or self.reads_paused(now):
                    self.paused_until = now + 0.1
                    self.waiting.add(m.topic)
            outs.append(None if m.topic in self.waiting else self.handle(m, now))
        return outs

    def flush(self, on_done=None):
        if self.boom:
            self.boom -= 1
            raise RuntimeError("a bug in storing")
        if self.hold and on_done is not None:
            self.held.append(on_done)
            return
        super().flush(on_done)

    def release(self):
        self.hold = False
        for f in self.held:
            f()


def test_a_stack_waiting_for_the_store_holds_only_its_own_messages_and_the_checkpoint(tmp_path):
    j = Journal(tmp_path)
    j.append([Message(t, p, 1.0) for t, p in (("a", b"a1"), ("b", b"b1"), ("a", b"wait"), ("b", b"b2"),
                                               ("a", b"a2"))])
    pipe = WaitingPipeline()
    proc = Processor(pipe, j, tick_s=0.05)
    proc.start()
    try:
        assert wait(lambda: pipe.handled == [b"a1", b"b1", b"b2"])
        j.append([Message("b", b"b3", 2.0), Message("a", b"a3", 2.0)])
        assert wait(lambda: pipe.handled == [b"a1", b"b1", b"b2", b"b3"])  # the other stack goes on
        time.sleep(0.5)
        assert pipe.handled == [b"a1", b"b1", b"b2", b"b3"]  # nothing of stack a overtakes the waiting one
        assert [r.payload for _, r in proc.waiting] == [b"wait", b"a2", b"a3"]
        assert j.status()["unprocessed"] == 5  # the checkpoint stays before the waiting message
        assert pipe.ticks > 0  # and the clock's work goes on meanwhile
        reads = pipe.reads
        time.sleep(0.5)
        assert pipe.reads - reads <= 6  # retried after a pause, not on every round
        pipe.hold = True  # the writer has not stored what is handled next
        pipe.down = False
        assert wait(lambda: pipe.handled == [b"a1", b"b1", b"b2", b"b3", b"wait", b"a2", b"a3"])
        time.sleep(0.3)
        # b3 is stored, but the waiting messages handled after it are not yet: the checkpoint stays before them
        assert j.status()["unprocessed"] == 5 and not proc.waiting
        pipe.release()
        assert wait(lambda: j.status()["unprocessed"] == 0)
    finally:
        proc.stop()


def test_a_flush_failing_after_waiting_messages_keeps_the_checkpoint_before_them_and_flushes_again(tmp_path):
    j = Journal(tmp_path)
    j.append([Message(t, p, 1.0) for t, p in (("a", b"wait"), ("b", b"b1"), ("a", b"a1"))])
    pipe = WaitingPipeline()
    proc = Processor(pipe, j, tick_s=0.05)
    proc.start()
    try:
        assert wait(lambda: pipe.handled == [b"b1"] and j.status()["unprocessed"] == 3)
        pipe.boom = 1
        pipe.down = False
        assert wait(lambda: pipe.handled == [b"b1", b"wait", b"a1"] and pipe.boom == 0)
        assert j.status()["unprocessed"] >= 2  # the failed flush moved the checkpoint past no waiting one
        assert wait(lambda: j.status()["unprocessed"] == 0)  # flushed again, without a new message
    finally:
        proc.stop()
