"""`python -m bench.pipeline` runs, hands every reading to the pipeline and reports it (a smoke run)."""

import re

from bench import pipeline as bp


def test_the_in_process_benchmark_runs_and_counts_every_reading(capsys):
    assert bp.main(["--stacks", "5", "--minutes", "2"]) == 0
    out = capsys.readouterr().out
    for batch in (60, 1):
        m = re.search(rf"batch +{batch}: +([\d,]+) readings/s .*\(([\d,]+) readings, ([\d,]+) accepted, 5 stacks\)",
                      out)
        assert m, out
        # two measured minutes of five stacks, every reading handed and accepted
        assert int(m.group(2).replace(",", "")) == int(m.group(3).replace(",", "")) == 5 * 2 * 60


def test_the_messages_are_a_stacks_minute_in_order():
    msgs = bp.minute_messages(3, 1_790_000_040, 0, 1)
    assert len(msgs) == 3 * 60
    assert [m.topic.split("/")[3] for m in msgs[:3]] == ["s0000", "s0001", "s0002"]  # stacks interleaved a second
