"""The JSON validator's fast path (logpipe._framing, _json_fast.h): sound, taken by typical lines, invisible.

The fast path answers "certainly valid" or "not sure"; on "not sure" the
exact validator (json_check) decides. So:

- Soundness: whatever a fast path variant accepts, the exact validator (the
  fast path off) accepts too, and so does orjson.loads. Checked for every
  variant this build and CPU have (``_FAST_VARIANTS``: "avx2", "sse2"), on
  the fuzz tests' JSON-ish documents and their mutations, and on lines built
  around the 64-byte blocks the fast path works in: special bytes, backslash
  runs and strings across block ends, every line length to 200, deep
  nesting, numbers and literals of every shape.
- Completeness: typical log lines take the fast path (a fast path that
  bailed out on everything would pass every soundness test).
- Equivalence: validate_json and the line framer give the same verdicts,
  reasons, offsets and counters with each variant as with the fast path off.

A build without the fast path (``LOGPIPE_PORTABLE=1``, other CPUs) must say
so (``FAST_PATH is None``, no variants) and still pass everything here: the
loops over variants are then empty, and the checks of the exact path run.
"""

from __future__ import annotations

import json
from contextlib import contextmanager

import orjson
import pytest
from framing.test_framing_fuzz import (
    byte_soup,
    json_documents,
    line_streams,
    mutated_documents,
    number_text,
    numbers_near_overflow,
    reference,
)
from framing.test_framing_json import INVALID, VALID, orjson_accepts
from _support import examples
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from logpipe import RingBuffer
from logpipe._framing import (
    _FAST_VARIANTS,
    FAST_PATH,
    MAX_DEPTH,
    SIMD,
    LineFramer,
    _fast_check,
    _use_fast_path,
    validate_json,
)

VARIANTS = _FAST_VARIANTS
FUZZ = settings(max_examples=examples(400), deadline=None, suppress_health_check=[HealthCheck.too_slow])


@contextmanager
def fast_path(name: str):
    previous = _use_fast_path(name)
    try:
        yield
    finally:
        _use_fast_path(previous)


def exact(doc: bytes) -> str | None:
    """validate_json's answer from the exact validator alone."""
    with fast_path("off"):
        assert _fast_check(doc) is None
        return validate_json(doc)


def check(doc: bytes) -> dict[str, bool]:
    """Soundness and equivalence for one document, with every variant; returns which variants were sure."""
    reason = exact(doc)
    sure = {}
    for variant in VARIANTS:
        with fast_path(variant):
            verdict = _fast_check(doc)
            assert verdict in (True, None)
            if verdict:
                assert reason is None, f"{variant} fast path accepts {doc!r}: {reason}"
                assert orjson_accepts(doc), f"{variant} fast path accepts {doc!r}, orjson does not"
            assert validate_json(doc) == reason, doc
            sure[variant] = bool(verdict)
    return sure


def assert_fast(doc: bytes) -> None:
    """Every variant is sure of doc (a valid line the fast path must take)."""
    assert exact(doc) is None and orjson_accepts(doc), doc
    for variant in VARIANTS:
        with fast_path(variant):
            assert _fast_check(doc) is True, f"{variant} fast path not sure of {doc!r}"


# --------------------------------------------------------------------------
# which fast path, and the switch


def test_fast_path_is_what_the_build_has():
    """x86-64 builds with SIMD have the SSE2 fast path (AVX2 where the CPU has it); portable builds none."""
    assert FAST_PATH in ("avx2", "sse2", None)
    assert (FAST_PATH is not None) == SIMD
    if SIMD:
        assert "sse2" in VARIANTS and VARIANTS[0] == FAST_PATH
    else:
        assert VARIANTS == ()
        with pytest.raises(ValueError, match="not available"):
            _use_fast_path("sse2")
        assert _fast_check(b"{}") is None and _fast_check(b'{"a": 1}') is None
    assert set(VARIANTS) <= {"avx2", "sse2"}


def test_switching_variants():
    """_use_fast_path returns the previous variant; unknown names are errors; off means no fast path."""
    with pytest.raises(ValueError, match="must be one of"):
        _use_fast_path("avx512")
    with fast_path("off"):
        assert _use_fast_path("off") == "off"
        assert _fast_check(b'{"a": 1}') is None
        assert validate_json(b'{"a": 1}') is None
    for variant in VARIANTS:
        with fast_path(variant):
            assert _use_fast_path(variant) == variant
            assert _fast_check(b'{"a": 1}') is True
    assert _use_fast_path(FAST_PATH or "off") == (FAST_PATH or "off")


def test_fast_check_takes_bytes_like_objects():
    for variant in VARIANTS:
        with fast_path(variant):
            assert _fast_check(bytearray(b"[1]")) is True
            assert _fast_check(memoryview(b"x[1]x")[1:4]) is True
            assert _fast_check(memoryview(b"[1]x")[:4]) is None
            with pytest.raises(TypeError, match="bytes-like"):
                _fast_check("[1]")


# --------------------------------------------------------------------------
# completeness: what typical log lines look like

GENERATOR_LINE = b'{"msg": "hello from producer", "level": "INFO", "ts": 1712345678123456, "seq": %d}'
STACK = (
    'Traceback (most recent call last):\n  File "/srv/app/handlers.py", line 212, in handle\n'
    '    result = self.dispatch(request)\n\tat com.example.Service.call(Service.java:88)\n'
    '    raise ValueError("bad \\"quoted\\" input: /api/v1/orders?id=7")\nValueError: bad input\r\n'
)


def typical_lines() -> list[bytes]:
    lines = [GENERATOR_LINE % seq for seq in (0, 7, 99, 1234, 10**9)]
    lines += [
        b'{"ts":1712345678123456,"level":"INFO","msg":"user 000042 logged in ok","seq":42}',
        b'{"ts": "2024-04-05T12:34:56.789Z", "level": "WARN", "msg": "upstream timeout, retry 2/5",'
        b' "latency_ms": 1500.25, "retry": true, "cached": false, "user": null, "shard": -3}',
        orjson.dumps({"ts": 1712345678.125, "level": "ERROR", "logger": "app.db", "msg": "query failed",
                      "error": STACK * 3, "query": 'SELECT * FROM "orders" WHERE id = 7'}),
        orjson.dumps({"level": "INFO", "http": {"method": "GET", "path": "/healthz", "status": 200},
                      "tags": ["a", "b", "c"], "ids": [1, 2, 3, -4, 0], "ratio": 0.5, "exp": 1.5e-05,
                      "nested": {"deep": {"deeper": [{"x": [1, [2, [3]]]}]}}, "empty": {}, "none": []}),
        json.dumps({"msg": "caf\u00e9 \u2603", "k": "\u00e9\u00e8"}).encode(),  # \u escapes, not surrogates
        b'{"path": "C:\\\\Program Files\\\\app", "url": "https:\\/\\/example.com\\/x", "ctl": "\\b\\f\\r\\t"}',
        b'  {"padded": true}  \t',
        b'[{"a": 1}, {"b": [true, false, null]}, "s", 0, -0.0, 123456789012345678901234567890]',
        b'{"k": "' + b"x" * 300 + b'", "n": 1}',
        b'{"k": ' + b"1" * 150 + b"}",
        b'"a plain string line"',
        b"12345",
        b"true",
        b"{}",
        b"[]",
    ]
    return lines


@pytest.mark.parametrize("line", typical_lines(), ids=lambda line: repr(line[:40]))
def test_typical_lines_take_the_fast_path(line):
    """Flat and nested objects, arrays, numbers, literals, escapes and stack traces: every variant is sure."""
    assert_fast(line)


def test_lines_the_fast_path_leaves_to_the_exact_validator():
    """Raw UTF-8, surrogate escapes, deep nesting, exponents of 3 digits: valid, but not the fast path's."""
    for doc in [
        '{"msg": "caf\u00e9"}'.encode(),
        orjson.dumps({"msg": "caf\u00e9 \u2603 sn\u00f8w", "n": 1}),
        b'{"emoji": "\\ud83d\\ude00"}',
        b"[" * 64 + b"]" * 64,
        b"1e100",
        b'{"a": 1e-300}',
        b"\t[1]",
    ]:
        assert exact(doc) is None
        sure = check(doc)
        if doc == b"\t[1]":
            assert all(sure.values())  # a tab outside strings is fine
        else:
            assert not any(sure.values()), doc


# --------------------------------------------------------------------------
# soundness: hypothesis


@FUZZ
@given(doc=json_documents())
def test_sound_on_formatted_json(doc):
    check(doc)


@settings(max_examples=examples(1000), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(doc=mutated_documents())
@example(doc=b'{"a":1,"b"}')
@example(doc=b'{"a" "b":1}')
def test_sound_on_mutated_json(doc):
    check(doc)


@FUZZ
@given(doc=st.one_of(number_text, numbers_near_overflow()))
def test_sound_on_numbers(doc):
    check(doc)
    check(b'{"n": ' + doc + b"}")
    check(b"[" + doc + b", " + doc + b"]")


@FUZZ
@given(doc=st.one_of(st.binary(max_size=80), byte_soup))
def test_sound_on_random_bytes(doc):
    check(doc)


flat_pieces = st.sampled_from([
    b"{", b"}", b"[", b"]", b":", b",", b'"k"', b'"v"', b"1", b"-2", b"0", b"01", b"1.5", b"true", b"null",
    b" ", b"\t", b"\r", b'"a\\"b"', b'"\\\\"', b"x",
])


@settings(max_examples=examples(1500), deadline=None)
@given(pieces=st.lists(flat_pieces, max_size=14), pad=st.integers(0, 70))
@example(pieces=[b"{", b'"k"', b":", b"1", b",", b'"k"', b":", b"1", b"}"], pad=0)
def test_sound_on_token_soup(pieces, pad):
    """Sequences of tokens, most of them not JSON: the flat-object and grammar checks must never be fooled."""
    doc = b" " * pad + b"".join(pieces)
    check(doc)
    check(b'{"pad": "' + b"p" * pad + b'", "x": ' + b"".join(pieces) + b"}")


@settings(max_examples=examples(300), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(doc=json_documents(), shift=st.integers(0, 130), key=st.integers(0, 70))
def test_sound_at_every_block_offset(doc, shift, key):
    """The same documents, moved across the 64-byte blocks by leading whitespace and a key's length."""
    check(b" " * shift + doc)
    check(b'{"' + b"k" * key + b'": ' + doc + b"}")
    check(b"[" + b" " * shift + doc + b"," + doc + b"]")


# --------------------------------------------------------------------------
# soundness: the block boundaries, deterministically

SPECIALS = [
    b'"', b"\\", b"\\\\", b'\\"', b"\\n", b"\\u00e9", b"\\u00g9", b"\\ud800", b"\\udc00", b"\\ud83d\\ude00", b"\\x",
    b"{", b"}", b"[", b"]", b":", b",", b"\x00", b"\x0c", b"\x1a", b"\x1f", b"\t", b"\r", b"\n", b"\x7f",
    b"\xc3\xa9", b"\xff", b"\x80", b" ", b"1", b"-", b"e", b".", b"tru", b"nul", b"true", b"null", b"0", b"01",
]


@pytest.mark.parametrize("special", SPECIALS, ids=repr)
def test_special_bytes_at_every_offset(special):
    """Each special byte or escape at offsets 0..130 of a line, inside a string and outside one."""
    for offset in range(131):
        # inside a string value: '{"k":"' is 6 bytes
        if offset >= 6:
            check(b'{"k":"' + b"a" * (offset - 6) + special + b'"}')
            check(b'{"k":"' + b"a" * (offset - 6) + special + b'", "n": 1}')
        # outside strings, after whitespace
        if offset >= 1:
            check(b"[" + b" " * (offset - 1) + special + b"]")
            check(b"[" + b" " * (offset - 1) + special + b", 1]")
        if offset >= 5:
            check(b'{"k":' + b" " * (offset - 5) + special + b"}")
        check(b" " * offset + special)
        check(b" " * offset + special + b" " * (offset % 7))


def test_backslash_runs_across_block_ends():
    """Runs of 1..70 backslashes ending near offsets 64 and 128, with every kind of byte after them."""
    for run in range(1, 71):
        for end in list(range(54, 76)) + list(range(118, 140)):
            start = end - run
            if start < 2:
                continue
            for after in (b'"', b'"}', b"n", b"u0041", b"ud800", b"x", b" ", b"\\", b"/", b'""'):
                doc = b'["' + b"a" * (start - 2) + b"\\" * run + after + b'"]'
                sure = check(doc)
                if run % 2 == 0 and after in (b"n", b"x", b" ", b"/"):
                    # an even run is all escaped backslashes: valid
                    assert exact(doc) is None
                    assert all(sure.values()), doc


def test_strings_ending_at_block_ends():
    """Keys and values whose closing quote is the last byte of a block, or the first of the next."""
    for length in range(40, 140):
        for doc in (
            b'{"k":"' + b"v" * length + b'"}',
            b'{"' + b"k" * length + b'":1}',
            b'["' + b"v" * length + b'","w"]',
            b'{"k":"' + b"v" * length + b'\\""}',
            b'"' + b"v" * length + b'"',
            b'"' + b"v" * length,  # never closed
            b'{"k":"' + b"v" * length + b'"',  # never closed
        ):
            sure = check(doc)
            if exact(doc) is None:
                assert all(sure.values()), doc


def test_lines_of_every_length():
    """Lines of 0..200 bytes: valid ones of each length, and every prefix of a valid line."""
    line = orjson.dumps({"msg": "a \"quoted\" word\nand a line", "n": -12.5e3, "ok": True, "x": None,
                         "list": [1, 2, {"a": "b"}], "s": "x" * 100, "z": 0})
    assert len(line) > 200
    for length in range(201):
        check(line[:length])
        check(line[length:])
        if length >= 8:
            doc = b'{"a":"' + b"x" * (length - 8) + b'"}'
            assert len(doc) == length
            assert all(check(doc).values())
        if length >= 1:
            number = b"9" * length
            sure = check(number)
            assert all(sure.values()) == (length <= 200)
    check(b"")
    check(b" " * 200)


def test_deep_nesting():
    """Arrays and objects nested 1..70 deep and around the 1024 limit (the fast path takes up to 63)."""
    for depth in list(range(1, 71)) + list(range(MAX_DEPTH - 2, MAX_DEPTH + 3)):
        for doc, nesting in (
            (b"[" * depth + b"]" * depth, depth),
            (b'{"k":' * depth + b"1" + b"}" * depth, depth),
            (b"[" * depth + b"]" * (depth - 1), depth),
            (b"[" * depth + b"]" * (depth + 1), depth),
            (b'{"k":[' * depth + b"0" + b"]}" * depth, 2 * depth),
            (b'{"k":' * depth + b"1" + b"]" * depth, depth),
            (b'{"k":' * depth + b"1" + b"}" * (depth - 1), depth),
            (b'{"k":' * depth + b"1" + b"}" * (depth + 1), depth),
            (b'{"k":[' * depth + b"0" + b"]}" * (depth - 1) + b"]", 2 * depth),
            (b"[" * depth + b'"' + b"s" * depth + b'"' + b"]" * depth, depth),
        ):
            sure = check(doc)
            if exact(doc) is None and nesting <= 63:
                assert all(sure.values()), doc[:40]


NUMBERS = [
    b"0", b"-0", b"0.5e-3", b"1E+2", b"1e007", b"01", b"-01", b"-", b"1.", b".5", b"1e400", b"1e99", b"1e-99",
    b"12345678901234567890", b"-12345678901234567890", b"1.e5", b"1e", b"1e+", b"1e+-5", b"+1", b"- 1", b"0x10",
    b"1.5.5", b"1e5e5", b"00", b"-0.0", b"0.000001", b"1E-07", b"9" * 200, b"9" * 201, b"9" * 309, b"9" * 310,
    b"1" + b"0" * 308, b"1.5e308", b"1.5e309", b"123e4", b"-1-1", b"1-", b"--1", b"2.", b"-.5", b"0e0", b"0E-0",
]


@pytest.mark.parametrize("number", NUMBERS, ids=lambda n: repr(n[:20]))
def test_numbers_of_every_shape(number):
    """Each number alone, in arrays and objects, and starting at every offset from 40 to 140 (across block ends)."""
    for doc in (number, b"[" + number + b"]", b'{"n":' + number + b"}", b'{"n": ' + number + b', "m": 1}',
                b"[1, " + number + b"]", b" " * 60 + number):
        check(doc)
    for offset in range(40, 141):
        # '{"k": "' is 7 bytes, '", "n": ' 8 more
        doc = b'{"k": "' + b"x" * (offset - 15) + b'", "n": ' + number + b', "m": ' + number + b"}"
        assert doc.index(b'"n": ') + 5 == offset
        sure = check(doc)
        if exact(doc) is None and b"e" not in number.lower() and len(number) <= 200:
            assert all(sure.values()), doc
        check(b"[" + b" " * offset + number + b"," + number + b"]")


def test_every_short_scalar_run():
    """Every run of up to 5 bytes from '-01.9e', as a value of a flat object (mask and quick checks) and alone."""
    runs = [b""]
    for _ in range(5):
        runs = [run + bytes([c]) for run in runs for c in b"-01.9e"] + runs
    assert len(set(runs)) == 1 + 6 + 36 + 216 + 1296 + 7776
    for run in set(runs) - {b""}:
        check(b'{"k": "' + b"x" * 40 + b'", "n": ' + run + b"}")
        check(b'{"n": ' + run + b', "k": "' + b"y" * 60 + b'"}')
        check(run)


LITERALS = [b"true", b"false", b"null", b"tru", b"nul", b"fals", b"t", b"f", b"n", b"truex", b"nulll", b"falsey",
            b"True", b"NULL", b"nan", b"NaN", b"Infinity", b"-Infinity", b"truefalse", b"true1", b"null\"x\""]


@pytest.mark.parametrize("literal", LITERALS, ids=repr)
def test_literals(literal):
    for doc in (literal, b"[" + literal + b"]", b'{"v":' + literal + b"}", b'{"v": ' + literal + b', "w": 2}',
                b" " * 61 + literal, b'{"k": "' + b"x" * 54 + b'", "v": ' + literal + b"}"):
        sure = check(doc)
        if literal in (b"true", b"false", b"null"):
            assert all(sure.values()), doc


TRAILERS = [b"", b" ", b"\t", b"\r", b"\r\n", b" x", b"1", b"{}", b"[]", b'"s"', b",", b":", b"}", b"]", b"\x00",
            b" \t \r ", b"/", b"true"]


@pytest.mark.parametrize("trailer", TRAILERS, ids=repr)
def test_trailing_bytes_and_second_values(trailer):
    """Whitespace after a value is fine; anything else (a second value, garbage) is not."""
    for value in (b'{"a": 1}', b"[1, 2]", b'"s"', b"12", b"true", b'{"k": "' + b"v" * 70 + b'"}'):
        for lead in (b"", b" ", b"\t", b"\r\n ", b" " * 64):
            doc = lead + value + trailer
            sure = check(doc)
            if trailer.strip(b" \t\r\n") == b"":
                assert exact(doc) is None
                assert all(sure.values()), doc


FLAT_NEAR_MISSES = [
    b'{"a":1,"b"}', b'{"a" "b":1}', b'{"a":1:2}', b'{"a",1}', b'{1:2}', b'{"a":1,}', b'{,"a":1}', b'{"a":1}}',
    b'{"a":1', b'"a":1}', b'{"a"::1}', b'{"a":1,,"b":2}', b'{"a":}', b'{:1}', b'{"a":1 "b":2}', b'{"a":"b":"c"}',
    b'{"a":1,"b":2,"c"}', b'{"a":[1}', b'{"a":1]', b'["a":1]', b'{"a":1,"b":{}', b'{}{}', b'{"a":1}{"b":2}',
    b'{"a":1},', b'{"a":1}]', b'{"a":true false}', b'{"a":1,"b":2]', b'{"a" :1 ,"b" :2 ,}', b'{"a":1,"b":2 ,"c" :}',
    b'{ "a" : 1 , "b" : 2 }', b'{"a":"x","b":-1.5e+10,"c":null}', b'{"":""}', b'{"a":{"b":1}}', b'{"a":[]}',
    b'{"a":1,"a":1}', b'{"a":1 , "b":2}', b'{"a":1,"b":2}x', b'x{"a":1}', b'{"a":01}', b'{"a":-}', b'{"a":1.}',
    b'{"a":1{"b":2}', b'{"a":1}"b":2}', b'{"a":1["b":2}', b'{"a":1]"b":2}', b'["a":1,"b":2}', b'{"a":1,"b":2]',
]


@pytest.mark.parametrize("doc", FLAT_NEAR_MISSES, ids=repr)
def test_flat_objects_and_near_misses(doc):
    """Flat objects and the token sequences closest to them, at several offsets (the mask-only flat check)."""
    for pad in (0, 1, 30, 58, 62, 63, 64, 65, 120):
        for variant in (b" " * pad + doc, b'{"pad": "' + b"p" * pad + b'", "x": ' + doc + b"}",
                        doc.replace(b":", b":" + b" " * pad), doc.replace(b",", b" " * pad + b",")):
            sure = check(variant)
            if exact(variant) is None:
                assert all(sure.values()), variant


def test_flat_objects_with_one_operator_replaced():
    """Flat objects of 1-4 pairs with any one of their operators replaced by any other (or a quote, or
    nothing), at several offsets: the flat check must catch every one that is not JSON."""
    for pairs in range(1, 5):
        parts = [b"{"]
        for k in range(pairs):
            parts += [b'"k%d"' % k, b":", (b"1", b'"v"', b"true", b"-2.5")[k % 4]]
            parts.append(b"," if k < pairs - 1 else b"}")
        operators = [i for i, part in enumerate(parts) if part in (b"{", b"}", b":", b",")]
        for i in operators:
            for other in (b"{", b"}", b"[", b"]", b":", b",", b'"', b"", b"{}", b"[]", b",,"):
                doc = b"".join(parts[:i] + [other] + parts[i + 1 :])
                for pad in (0, 5, 60, 63):
                    check(b" " * pad + doc)
                    check(b'{"pad": "' + b"p" * pad + b'", "x": ' + doc + b"}")
        assert all(check(b"".join(parts)).values())


def test_the_tables_of_test_framing_json():
    """Every valid and invalid document of the validator's tables: same answers with each variant."""
    for doc in VALID:
        check(doc)
    for doc, reason in INVALID:
        assert exact(doc) == reason
        check(doc)


# --------------------------------------------------------------------------
# equivalence: the framer


def frame(stream: bytes, variant: str, max_line: int = 5000):
    with fast_path(variant):
        ring = RingBuffer(1 << 12, max_record_size=max_line)
        framer = LineFramer(ring, max_line=max_line, validate_json=True)
        for at in range(0, len(stream), 997):
            framer.feed(stream[at : at + 997])
        framer.finish()
        records = []
        while len(ring):
            records.extend(ring.get_many(1 << 16, block=False))
        counters = (framer.lines, framer.records, framer.invalid, framer.too_long, framer.blank, framer.consumed,
                    framer.pending, framer.fed)
        return records, framer.take_rejected(), counters


@settings(max_examples=examples(200), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(stream=line_streams())
def test_framer_is_the_same_with_every_variant(stream):
    """Records, rejections (reasons with offsets) and counters do not depend on the fast path."""
    ref = reference(stream, 5000, True)
    off = frame(stream, "off")
    assert off[0] == ref.records and off[1] == ref.rejected
    for variant in VARIANTS:
        assert frame(stream, variant) == off


def test_framer_on_typical_and_broken_lines():
    lines = typical_lines() + [line[:-1] for line in typical_lines()] + [b'{"a": "\xff"}', b"[1,]", b"{" * 70]
    stream = b"\n".join(lines * 3) + b"\n"
    off = frame(stream, "off")
    assert off[2][1] == sum(1 for line in lines * 3 if exact(line) is None)
    for variant in VARIANTS:
        assert frame(stream, variant) == off
