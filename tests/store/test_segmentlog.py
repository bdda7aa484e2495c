"""The segment log under the journal and the spool: durable appends, ordered reads, checkpoint, compaction."""

import os
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cems.store.segmentlog import LogFull, SegmentLog


def bodies(n, start=0):
    return [f"record {i}".encode() * (1 + i % 3) for i in range(start, start + n)]


def read_all(log, max_records=10_000):
    out = []
    while True:
        got = log.read(max_records)
        if not got:
            return out
        out += got


def test_round_trip_across_segments_and_reopen(tmp_path):
    log = SegmentLog(tmp_path, "t", segment_bytes=200)
    assert log.append(bodies(10)) == 10
    assert log.append(bodies(15, 10)) == 25
    assert len(list(tmp_path.glob("*.seg"))) >= 2  # rolled
    got = read_all(log)
    assert [s for s, _ in got] == list(range(1, 26))
    assert [b for _, b in got] == bodies(25)
    log.commit(12)
    log.close()
    again = SegmentLog(tmp_path, "t", segment_bytes=200)
    got = read_all(again)
    assert [s for s, _ in got] == list(range(13, 26))  # from the checkpoint on
    assert again.append([b"next"]) == 26
    assert again.read() == [(26, b"next")]


def test_commit_compacts_whole_segments_only(tmp_path):
    log = SegmentLog(tmp_path, "t", segment_bytes=100)
    for i in range(6):
        log.append(bodies(3, 3 * i))
    segs = len(list(tmp_path.glob("*.seg")))
    read_all(log)
    log.commit(7)
    left = sorted(tmp_path.glob("*.seg"))
    assert len(left) < segs
    assert int(left[0].stem) <= 8  # the segment holding record 8 stays
    log.commit(18)
    assert len(list(tmp_path.glob("*.seg"))) == 1  # the active one stays even when all is committed
    assert log.status()["records"] == 0


def test_torn_tail_is_cut_and_the_log_goes_on(tmp_path):
    log = SegmentLog(tmp_path, "t")
    log.append(bodies(5))
    log.close()
    seg = next(tmp_path.glob("*.seg"))
    with open(seg, "ab") as f:  # a crash mid-append: a header promising more than was written
        f.write(struct.pack("<II", 100, 0) + b"half")
    again = SegmentLog(tmp_path, "t")
    assert [s for s, _ in read_all(again)] == [1, 2, 3, 4, 5]
    assert again.append([b"six"]) == 6
    assert again.read() == [(6, b"six")]


def test_a_damaged_checkpoint_means_reading_from_the_start(tmp_path):
    log = SegmentLog(tmp_path, "t")
    log.append(bodies(4))
    log.commit(3)
    log.close()
    (tmp_path / "checkpoint").write_bytes(b"\x03" + b"\x00" * 11)  # crc no longer matches
    again = SegmentLog(tmp_path, "t")
    assert [s for s, _ in read_all(again)] == [1, 2, 3, 4]


def test_full_log_refuses_until_the_consumer_commits(tmp_path):
    log = SegmentLog(tmp_path, "t", segment_bytes=64, max_bytes=120)
    log.append([b"x" * 50])
    log.append([b"y" * 50])
    log.append([b"z" * 50])
    with pytest.raises(LogFull):
        log.append([b"w"])
    assert not log.wait_for_room(0.01)
    read_all(log)
    log.commit(3)
    assert log.wait_for_room(0.01)
    assert log.append([b"w"]) == 4


def test_rewind_reads_again_from_the_checkpoint(tmp_path):
    log = SegmentLog(tmp_path, "t")
    log.append(bodies(5))
    read_all(log)
    log.commit(2)
    log.rewind()
    assert [s for s, _ in read_all(log)] == [3, 4, 5]


def test_read_waits_for_an_append(tmp_path):
    import threading

    log = SegmentLog(tmp_path, "t")
    threading.Timer(0.1, lambda: log.append([b"late"])).start()
    assert log.read(timeout=5.0) == [(1, b"late")]


def test_appended_records_are_on_disk_before_append_returns(tmp_path, monkeypatch):
    synced = []
    real = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (synced.append(fd), real(fd)))
    log = SegmentLog(tmp_path, "t")
    log.append([b"first"])  # opens the segment: the file and its directory entry are synced
    assert len(synced) == 2
    log.append([b"a", b"b"])
    assert len(synced) == 3  # then one fsync per batch


@settings(max_examples=60, deadline=None)
@given(st.lists(st.one_of(st.tuples(st.just("append"), st.integers(1, 6)),
                          st.tuples(st.just("read"), st.integers(1, 8)),
                          st.tuples(st.just("commit"), st.integers(0, 8)),
                          st.tuples(st.just("reopen"), st.just(0))), max_size=40))
def test_model(tmp_path_factory, ops):
    """Whatever the interleaving of appends, reads, commits and restarts, the reader sees every record
    after the checkpoint once, in order, and nothing it has not been given."""
    d = tmp_path_factory.mktemp("log")
    log = SegmentLog(d, "t", segment_bytes=90)
    written, committed, last_read = [], 0, 0
    for op, k in ops:
        if op == "append":
            new = [f"r{len(written) + i}".encode() for i in range(k)]
            written += new
            assert log.append(new) == len(written)
        elif op == "read":
            got = log.read(k)
            assert [s for s, _ in got] == list(range(last_read + 1, last_read + 1 + len(got)))
            assert [b for _, b in got] == written[last_read:last_read + len(got)]
            assert len(got) == min(k, len(written) - last_read)
            last_read += len(got)
        elif op == "commit":
            seq = min(committed + k, last_read)
            log.commit(seq)
            committed = max(committed, seq)
        else:
            log.close()
            log = SegmentLog(d, "t", segment_bytes=90)
            last_read = committed
    assert [b for _, b in read_all(log)] == written[last_read:]
    log.close()
