"""The bulk reading-line builder writes exactly the bytes of the per-point one."""

import math

from hypothesis import given, settings
from hypothesis import strategies as st

from cems.compute.channels import NAMES
from cems.store import lineproto, schema

value = st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.sampled_from([0.0, -0.0, 12.5, 1e308, -1e308]))
text = st.text(alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=8)
reading = st.tuples(st.integers(0, 2**42), st.lists(value, min_size=len(NAMES), max_size=len(NAMES)),
                    st.sampled_from(["N", "D", 'x"y', "C"]), st.sampled_from(["valid", "invalid", "stopped"]), text)


@settings(max_examples=300, deadline=None)
@given(readings=st.lists(reading, min_size=1, max_size=6), gw=st.one_of(st.none(), text),
       seq=st.one_of(st.none(), st.integers(0, 2**53)), plant=st.sampled_from(["p", "p,1", "a b=c"]))
def test_same_bytes_as_reading_line(readings, gw, seq, plant):
    ts, vals, status, validity, reason = (list(x) for x in zip(*readings, strict=True))
    tails = [schema.reading_tail(s, v, r, gw, seq) for s, v, r in zip(status, validity, reason, strict=True)]
    got = schema.reading_lines([schema.reading_head(plant, "s1")] * len(ts), ts, vals, tails)
    want = [schema.reading_line(plant, "s1", *r, gw, seq) for r in readings]
    assert got == want


def test_finite_rows_take_the_fast_path_and_others_name_their_nulls():
    rows = [[1.0] * len(NAMES), [math.nan] + [2.0] * (len(NAMES) - 1)]
    tails = [schema.reading_tail("N", "valid", "", "g", 1), schema.reading_tail("N", "invalid", "x", "g", 1)]
    a, b = schema.reading_lines([schema.reading_head("p", "s")] * 2, [1, 2], rows, tails)
    assert 'nulls=""' in a and f'nulls="{NAMES[0]}"' in b and f"{NAMES[0]}=" not in b


@given(st.floats(allow_nan=False, allow_infinity=False))
def test_float_text_reads_back_as_the_same_float(v):
    text = lineproto.float_text(v)
    assert float(text) == v and math.copysign(1, float(text)) == math.copysign(1, v)


minute = st.tuples(st.integers(0, 2**33), st.sampled_from(["valid", "invalid", "stopped", 'x"y']),
                   st.lists(st.integers(0, 2**40), min_size=3, max_size=3),
                   st.lists(value, min_size=len(schema.MINUTE_FLOATS), max_size=len(schema.MINUTE_FLOATS)),
                   st.sampled_from(["china", "us_part75", "a b"]))


@settings(max_examples=300, deadline=None)
@given(minutes=st.lists(minute, min_size=1, max_size=6), plant=st.sampled_from(["p", "p,1", "a b=c"]),
       stack=st.sampled_from(["s1", "k 2"]))
def test_minute_lines_are_the_bytes_of_figure_line(minutes, plant, stack):
    starts, statuses, counts, floats, regimes = (list(x) for x in zip(*minutes, strict=True))
    head = schema.series_head(schema.MINUTE, plant, stack)
    got = schema.minute_lines([head] * len(starts), statuses, counts, floats, regimes, starts)
    want = []
    for start, status, (n, nv, ns), fl, regime in minutes:
        row = {"status": status, "n": n, "n_valid": nv, "n_stopped": ns}
        row.update(zip(schema.MINUTE_FLOATS, fl, strict=True))
        row["regime"] = regime
        want.append(schema.figure_line(schema.MINUTE, plant, stack, start, row))
    assert got == want
