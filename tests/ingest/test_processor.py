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


class PrefixPipeline(FakePipeline):
    """Stops a batch before a `wait` message while `down` (a read from the store failing), as
    `Pipeline.handle_batch` does: the messages before it only, or `InfluxError` if it comes first."""

    def __init__(self):
        super().__init__()
        self.down = True

    def handle_batch(self, msgs, now):
        for i, m in enumerate(msgs):
            if m.payload == b"wait" and self.down:
                if i == 0:
                    raise InfluxError("InfluxDB unreachable")
                return [self.handle(x, now) for x in msgs[:i]]
        return [self.handle(x, now) for x in msgs]


def test_the_rest_of_a_stopped_batch_is_handled_first_next_time_and_the_checkpoint_waits(tmp_path):
    j = Journal(tmp_path)
    j.append([Message("t", p, 1.0) for p in (b"a", b"b", b"wait", b"c")])
    pipe = PrefixPipeline()
    proc = Processor(pipe, j, tick_s=0.05)
    proc.start()
    try:
        assert wait(lambda: pipe.handled == [b"a", b"b"])
        j.append([Message("t", b"d", 2.0)])
        time.sleep(0.8)
        assert pipe.handled == [b"a", b"b"]  # nothing overtakes the waiting message
        assert j.status()["unprocessed"] == 3  # the checkpoint stays before it
        pipe.down = False
        assert wait(lambda: pipe.handled == [b"a", b"b", b"wait", b"c", b"d"] and j.status()["unprocessed"] == 0)
    finally:
        proc.stop()
