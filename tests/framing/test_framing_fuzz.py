"""Fuzz tests (hypothesis) for the line framer and the JSON validator.

(a) Random and adversarial byte streams fed in random chunkings give the same
    records and rejections as a simple pure-Python reference splitter, with a
    roomy ring and with a tiny ring that keeps filling up (timeouts, resumes);
    after every call the counters add up and ``consumed`` is exactly the
    offset the reference says.
(b) validate_json agrees with orjson.loads on JSON-ish bytes: documents from a
    recursive JSON strategy (lone surrogates and huge numbers included) run
    through random mutations, numbers near the double overflow threshold, and
    random bytes. The module docstring of logpipe._framing lists the known
    differences: none in accept/reject, so any disagreement fails.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import orjson
from _support import examples
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st

from logpipe import RingBuffer
from framing.test_framing_json import orjson_accepts
from logpipe._framing import KEPT_BYTES, LineFramer, validate_json

FUZZ = settings(max_examples=examples(250), deadline=None, suppress_health_check=[HealthCheck.too_slow])


# --------------------------------------------------------------------------
# the reference splitter


@dataclass
class Reference:
    records: list[bytes] = field(default_factory=list)
    record_starts: list[int] = field(default_factory=list)  # input offset where each record's line starts
    rejected: list[tuple[str, bytes, int]] = field(default_factory=list)
    blank: int = 0
    lines: int = 0


def reference(stream: bytes, max_line: int, validate: bool) -> Reference:
    """Split ``stream`` (ended by finish) the obvious way: bytes.split, one \\r stripped."""
    ref = Reference()
    pos = 0
    parts = stream.split(b"\n")
    for i, raw in enumerate(parts):
        if i == len(parts) - 1 and not raw:
            break  # the stream ended with a newline (or is empty)
        ref.lines += 1
        line = raw[:-1] if raw.endswith(b"\r") else raw
        if not line:
            ref.blank += 1
        elif len(line) > max_line:
            ref.rejected.append(("too long", line[:KEPT_BYTES], len(line)))
        elif validate and (reason := validate_json(line)) is not None:
            ref.rejected.append((reason, line[:KEPT_BYTES], len(line)))
        else:
            ref.records.append(line)
            ref.record_starts.append(pos)
        pos += len(raw) + 1
    return ref


def check_counters(framer: LineFramer, fed: int) -> None:
    assert framer.fed == fed
    assert framer.consumed + framer.pending == fed
    assert framer.lines == framer.records + framer.invalid + framer.blank + framer.pending_lines


def check_final(framer: LineFramer, ref: Reference, records: list[bytes], rejected: list, total: int) -> None:
    assert records == ref.records
    assert rejected == ref.rejected
    assert framer.records == len(ref.records)
    assert framer.invalid == len(ref.rejected)
    assert framer.too_long == sum(1 for reason, _, _ in ref.rejected if reason == "too long")
    assert framer.blank == ref.blank
    assert framer.lines == ref.lines
    assert framer.consumed == total and framer.pending == 0 and framer.pending_lines == 0


def drain(ring: RingBuffer, limit: int | None = None) -> list[bytes]:
    out: list[bytes] = []
    while len(ring) and (limit is None or len(out) < limit):
        out.extend(ring.get_many(1 if limit is not None else 1 << 16, block=False))
    return out


def chunks(stream: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({min(c, len(stream)) for c in cuts})
    out, prev = [], 0
    for p in points + [len(stream)]:
        out.append(stream[prev:p])
        prev = p
    return out


# --------------------------------------------------------------------------
# stream strategies

json_scalars = st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.floats(allow_nan=False, allow_infinity=False) | st.text()
json_values = st.recursive(
    json_scalars, lambda kids: st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=5), kids, max_size=4),
    max_leaves=8,
)
good_lines = json_values.map(orjson.dumps)
bad_json_lines = st.sampled_from([
    b"{", b"[1,]", b'{"a":1,}', b"NaN", b'"\\ud800"', b"1e400", b"01", b"'x'", b'"\xff"', b"\xc3\xa9", b"[" * 1100,
    b'{"a" 1}', b"tru", b"   ", b"\t", b"\r", b"\x00", b"//c", b"[1]]",
])
random_lines = st.binary(max_size=40).map(lambda b: b.replace(b"\n", b""))
long_lines = st.integers(1, 9000).map(lambda n: b'"' + b"L" * n + b'"')
terminators = st.sampled_from([b"\n", b"\r\n", b"\n", b"\r\r\n"])


@st.composite
def line_streams(draw) -> bytes:
    """Adversarial line sets: good and bad JSON, blank, CRLF, binary, long lines, no final newline."""
    kinds = st.one_of(good_lines, good_lines, bad_json_lines, random_lines, long_lines, st.just(b""))
    lines = draw(st.lists(st.tuples(kinds, terminators), max_size=30))
    stream = b"".join(line + term for line, term in lines)
    if draw(st.booleans()):
        stream += draw(kinds)  # a final line without newline
    return stream


byte_soup = st.lists(
    st.sampled_from([b"\n", b"\r", b"\r\n", b"{", b"}", b"[", b"]", b'"', b",", b":", b"1", b"a", b" ", b"\xff",
                     b"\xc3", b"\xa9", b"null", b"\\", b"u"]),
    max_size=200,
).map(b"".join)

streams = st.one_of(line_streams(), byte_soup, st.binary(max_size=300))
max_lines = st.sampled_from([1, 3, 16, 64, 300, 5000])


# --------------------------------------------------------------------------
# (a) the framer against the reference


@FUZZ
@given(stream=streams, cuts=st.lists(st.integers(0, 20_000), max_size=12), max_line=max_lines,
       validate=st.booleans())
@example(stream=b'{"a":1}\r\n\n[1,]\nx' * 3, cuts=[1, 8, 9, 10], max_line=3, validate=True)
def test_framer_matches_reference_in_random_chunkings(stream, cuts, max_line, validate):
    """Any chunking of any stream gives the reference's records and rejections, and the counts add up."""
    ref = reference(stream, max_line, validate)
    ring = RingBuffer(1 << 12, max_record_size=max(max_line, 1))
    framer = LineFramer(ring, max_line=max_line, validate_json=validate)
    fed = 0
    rejected: list = []
    for piece in chunks(stream, cuts):
        framer.feed(piece)
        fed += len(piece)
        rejected += framer.take_rejected()
        check_counters(framer, fed)
        assert framer.pending_lines == 0
        assert framer.consumed == stream.rfind(b"\n", 0, fed) + 1
        assert framer.buffered <= max(max_line + 1, KEPT_BYTES)
        assert rejected == ref.rejected[: len(rejected)]
    framer.finish()
    rejected += framer.take_rejected()
    check_counters(framer, fed)
    check_final(framer, ref, drain(ring), rejected, len(stream))


@FUZZ
@given(stream=streams, cuts=st.lists(st.integers(0, 20_000), max_size=12), max_line=max_lines,
       validate=st.booleans(), capacity=st.integers(1, 4), drains=st.lists(st.integers(0, 5), min_size=1))
def test_framer_with_a_full_ring_holds_and_resumes(stream, cuts, max_line, validate, capacity, drains):
    """With a tiny ring and timeout=0 lines are held, never lost or reordered; consumed stops at the first held line."""
    ref = reference(stream, max_line, validate)
    ring = RingBuffer(capacity, max_record_size=max(max_line, 1))
    framer = LineFramer(ring, max_line=max_line, validate_json=validate)
    fed = 0
    got: list[bytes] = []
    rejected: list = []

    def check_consumed(finished: bool) -> None:
        check_counters(framer, fed)
        assert rejected == ref.rejected[: len(rejected)]
        if framer.pending_lines:
            assert framer.consumed == ref.record_starts[framer.records]
        elif finished:
            assert framer.consumed == fed
        else:
            assert framer.consumed == stream.rfind(b"\n", 0, fed) + 1

    for i, piece in enumerate(chunks(stream, cuts)):
        framer.feed(piece, timeout=0)
        fed += len(piece)
        rejected += framer.take_rejected()
        check_consumed(False)
        got += drain(ring, drains[i % len(drains)])
    for _ in range(len(ref.records) + 5):
        framer.finish(timeout=0)
        rejected += framer.take_rejected()
        check_consumed(True)
        got += drain(ring)
        if not framer.pending:
            break
    assert framer.closed is False
    check_final(framer, ref, got, rejected, len(stream))


@settings(max_examples=examples(60), deadline=None)
@given(stream=line_streams(), cut=st.integers(0, 10_000), capacity=st.integers(1, 3))
def test_closed_ring_keeps_lines_held(stream, cut, capacity):
    """Closing the ring mid-stream loses nothing: what went in plus what is held is the reference."""
    ref = reference(stream, 64, True)
    ring = RingBuffer(capacity, max_record_size=64)
    framer = LineFramer(ring, max_line=64, validate_json=True)
    framer.feed(stream[:cut], timeout=0)
    ring.close()
    framer.feed(stream[cut:], timeout=None)
    framer.finish(timeout=None)
    check_counters(framer, len(stream))
    got = drain(ring)
    assert got == ref.records[: len(got)]
    assert framer.records == len(got)
    assert framer.records + framer.pending_lines == len(ref.records)
    assert framer.take_rejected() == ref.rejected
    if framer.pending_lines:
        assert framer.closed is True
        assert framer.consumed == ref.record_starts[framer.records]


# --------------------------------------------------------------------------
# (b) validate_json against orjson


def agree(doc: bytes) -> None:
    ours = validate_json(doc)
    assert (ours is None) == orjson_accepts(doc), f"validate_json={ours!r} orjson disagrees on {doc!r}"


any_text = st.text(st.characters(blacklist_categories=()), max_size=8)  # lone surrogates included
wide_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | any_text
    | st.integers(min_value=10**300, max_value=10**320),
    lambda kids: st.lists(kids, max_size=4) | st.dictionaries(any_text, kids, max_size=4),
    max_leaves=12,
)


@st.composite
def json_documents(draw) -> bytes:
    """A JSON value, formatted in one of several ways (escaped or raw UTF-8, surrogates passed through)."""
    value = draw(wide_values)
    text = json.dumps(
        value,
        ensure_ascii=draw(st.booleans()),
        indent=draw(st.sampled_from([None, 0, 2, "\t"])),
        separators=draw(st.sampled_from([None, (",", ":"), (" , ", " : ")])),
    )
    pad = draw(st.sampled_from(["", " ", "\r\n", "\t \n"]))
    return (pad + text + pad).encode("utf-8", "surrogatepass")


MUTATION_BYTES = [
    b"{", b"}", b"[", b"]", b'"', b",", b":", b"\\", b"\\u", b"\\ud800", b"\\udc00", b"0", b"9", b"-", b"+", b".",
    b"e", b"E", b"e999", b"t", b"true", b"n", b" ", b"\t", b"\n", b"\x00", b"\x1f", b"\x7f", b"\xff", b"\xc3",
    b"\xa9", b"\xed\xa0\x80", b"\xf0\x9f\x98\x80", b"\xef\xbb\xbf", b"/", b"'", b"NaN",
]


@st.composite
def mutated_documents(draw) -> bytes:
    doc = bytearray(draw(json_documents()))
    for _ in range(draw(st.integers(1, 4))):
        at = draw(st.integers(0, len(doc)))
        op = draw(st.sampled_from(["insert", "delete", "replace"]))
        piece = draw(st.sampled_from(MUTATION_BYTES))
        if op == "insert":
            doc[at:at] = piece
        elif op == "delete":
            del doc[at : at + draw(st.integers(1, 3))]
        else:
            doc[at : at + len(piece)] = piece
    return bytes(doc)


number_text = st.from_regex(rb"\A-?(0|[1-9][0-9]{0,330})(\.[0-9]{1,25})?([eE][+-]?[0-9]{1,4})?\Z", fullmatch=True)
HALFWAY = 2**1024 - 2**970


@st.composite
def numbers_near_overflow(draw) -> bytes:
    """Decimal spellings of values within a hair of the double overflow threshold."""
    value = HALFWAY + draw(st.integers(-(10**6), 10**6)) * draw(st.sampled_from([1, 10**10, 10**280, 10**292]))
    digits = str(value)
    form = draw(st.sampled_from(["integer", "point", "leading zero"]))
    if form == "integer":
        text = digits
    elif form == "point":  # d.ddd...e308, the point moved left and the exponent raised to match
        shift = draw(st.integers(1, len(digits) - 1))
        zeros = draw(st.sampled_from(["", "0", "000"]))
        text = digits[:-shift] + "." + digits[-shift:] + zeros + draw(st.sampled_from(["e", "E", "e+"])) + str(shift)
    else:  # 0.ddd...e309
        text = "0." + digits + "e" + str(len(digits))
    return (draw(st.sampled_from(["", "-"])) + text).encode()


@settings(max_examples=examples(400), deadline=None)
@given(doc=json_documents())
def test_validator_accepts_what_orjson_accepts(doc):
    """Formatted JSON values (lone surrogates and huge integers included) get orjson's verdict."""
    agree(doc)


@settings(max_examples=examples(600), deadline=None)
@given(doc=mutated_documents())
@example(doc=b'["\\ud800\\udc00x"]')
@example(doc=b'{"a":1e999}')
def test_validator_agrees_with_orjson_on_mutated_documents(doc):
    """Mutated JSON documents are valid for validate_json exactly when orjson.loads accepts them."""
    agree(doc)


@settings(max_examples=examples(300), deadline=None)
@given(doc=st.one_of(number_text, numbers_near_overflow()))
def test_validator_agrees_with_orjson_on_numbers(doc):
    """Number spellings, up to the exact overflow threshold of a double, get orjson's verdict."""
    agree(doc)


@settings(max_examples=examples(300), deadline=None)
@given(doc=st.one_of(st.binary(max_size=40), byte_soup))
def test_validator_agrees_with_orjson_on_random_bytes(doc):
    """Random bytes never crash the validator and get orjson's verdict."""
    assume(doc.strip(b" \t\r\n"))  # orjson and we both reject empty documents; keep examples interesting
    agree(doc)
