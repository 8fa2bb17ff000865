"""Table tests for logpipe._framing.validate_json, the nogil JSON validator.

Each valid document must give None and each invalid one its exact reason;
every row is also checked against orjson.loads, the reference the module
docstring promises to follow (lone surrogate escapes, depth 1024, numbers
that overflow a double).
"""

from __future__ import annotations

import orjson
import pytest

from logpipe._framing import MAX_DEPTH, validate_json

# 2**1024 - 2**970: the smallest decimal that rounds to infinity as a double.
DBL_HALFWAY = str(2**1024 - 2**970)
DBL_BELOW = str(2**1024 - 2**970 - 1)

RFC_IMAGE = b"""{
      "Image": {
          "Width":  800,
          "Height": 600,
          "Title":  "View from 15th Floor",
          "Thumbnail": {
              "Url":    "http://www.example.com/image/481989943",
              "Height": 125,
              "Width":  100
          },
          "Animated" : false,
          "IDs": [116, 943, 234, 38793]
        }
    }"""

RFC_ARRAY = b"""[
      {
         "precision": "zip",
         "Latitude":  37.7668,
         "Longitude": -122.3959,
         "Address":   "",
         "City":      "SAN FRANCISCO",
         "State":     "CA",
         "Zip":       "94107",
         "Country":   "US"
      },
      {
         "precision": "zip",
         "Latitude":  37.371991,
         "Longitude": -122.026020,
         "Address":   "",
         "City":      "SUNNYVALE",
         "State":     "CA",
         "Zip":       "94085",
         "Country":   "US"
      }
    ]"""

VALID = [
    # RFC 8259 section 13 and the small texts of section 2
    RFC_IMAGE,
    RFC_ARRAY,
    b'"Hello world!"',
    b"42",
    b"true",
    b"false",
    b"null",
    # containers and whitespace
    b"{}",
    b"[]",
    b" \t\r\n[ ] \r\n",
    b'{"a":{"b":[{"c":[]}]}}',
    b'{"a": 1, "a": 2}',  # duplicate keys: syntactically fine
    b'[1, "two", 3.0, true, false, null, {}, []]',
    b"[" * MAX_DEPTH + b"]" * MAX_DEPTH,
    b'{"k":' * (MAX_DEPTH - 1) + b"[0]" + b"}" * (MAX_DEPTH - 1),
    # numbers
    b"0",
    b"-0",
    b"-0.0",
    b"0.5e-3",
    b"1E+2",
    b"1e007",
    b"123456789012345678901234567890",
    b"1e308",
    b"1.7976931348623157e308",
    b"0.1e309",
    b"1e-99999999999999999999",
    b"0e99999999999999999999",
    b"0.000000e999",
    DBL_BELOW.encode(),
    b"-" + DBL_BELOW.encode(),
    # strings: escapes, unicode, surrogate pairs
    b'"\\"\\\\\\/\\b\\f\\n\\r\\t"',
    b'"\\u0000"',
    b'"\\u00e9\\u00E9"',
    b'"\\ud83d\\ude00"',
    b'"\\uD834\\uDD1E"',
    b'"\\ufffe\\uffff"',
    '"caf\u00e9 \u20ac \U0001f600 \uffff \U0010ffff"'.encode(),
    b'"\x7f"',
    b'"/"',
]

INVALID = [
    (b"", "not JSON: unexpected end at 0"),
    (b"   ", "not JSON: unexpected end at 3"),
    (b"{", "not JSON: unexpected end at 1"),
    (b'{"a"', "not JSON: unexpected end at 4"),
    (b'{"a":', "not JSON: unexpected end at 5"),
    (b'{"a":1', "not JSON: unexpected end at 6"),
    (b"[1,", "not JSON: unexpected end at 3"),
    (b'"abc', "not JSON: unexpected end at 4"),
    (b"tru", "not JSON: unexpected end at 3"),
    (b"-", "not JSON: unexpected end at 1"),
    (b"1.", "not JSON: unexpected end at 2"),
    (b"1e", "not JSON: unexpected end at 2"),
    (b"1e+", "not JSON: unexpected end at 3"),
    (b'"\\u12', "not JSON: unexpected end at 5"),
    # trailing commas, comments, non-JSON literals, quotes
    (b"[1,]", "not JSON: unexpected byte 0x5d at 3"),
    (b'{"a":1,}', "not JSON: unexpected byte 0x7d at 7"),
    (b"[,1]", "not JSON: unexpected byte 0x2c at 1"),
    (b"[1 2]", "not JSON: unexpected byte 0x32 at 3"),
    (b'{"a" 1}', "not JSON: unexpected byte 0x31 at 5"),
    (b"{1:2}", "not JSON: unexpected byte 0x31 at 1"),
    (b"{'a':1}", "not JSON: unexpected byte 0x27 at 1"),
    (b"[1] // c", "not JSON: unexpected byte 0x2f at 4"),
    (b"/* c */ 1", "not JSON: unexpected byte 0x2f at 0"),
    (b"NaN", "not JSON: unexpected byte 0x4e at 0"),
    (b"Infinity", "not JSON: unexpected byte 0x49 at 0"),
    (b"-Infinity", "not JSON: unexpected byte 0x49 at 1"),
    (b"True", "not JSON: unexpected byte 0x54 at 0"),
    (b"nul1", "not JSON: unexpected byte 0x31 at 3"),
    (b"true false", "not JSON: unexpected byte 0x66 at 5"),
    (b"{}}", "not JSON: unexpected byte 0x7d at 2"),
    (b"[1]\x00", "not JSON: unexpected byte 0x00 at 3"),
    (b"\x0c1", "not JSON: unexpected byte 0x0c at 0"),
    (b"[1}", "not JSON: unexpected byte 0x7d at 2"),
    (b'{"a":1]', "not JSON: unexpected byte 0x5d at 6"),
    # numbers
    (b"01", "not JSON: unexpected byte 0x31 at 1"),
    (b"-01", "not JSON: unexpected byte 0x31 at 2"),
    (b"+1", "not JSON: unexpected byte 0x2b at 0"),
    (b".5", "not JSON: unexpected byte 0x2e at 0"),
    (b"1.e5", "not JSON: unexpected byte 0x65 at 2"),
    (b"1e+-5", "not JSON: unexpected byte 0x2d at 3"),
    (b"0x10", "not JSON: unexpected byte 0x78 at 1"),
    (b"- 1", "not JSON: unexpected byte 0x20 at 1"),
    (b"1e400", "not JSON: number out of range at 0"),
    (b"[-1e400]", "not JSON: number out of range at 1"),
    (b"10e308", "not JSON: number out of range at 0"),
    (b"1e99999999999999999999", "not JSON: number out of range at 0"),
    (DBL_HALFWAY.encode(), "not JSON: number out of range at 0"),
    (DBL_HALFWAY.encode() + b".0", "not JSON: number out of range at 0"),
    (b"0." + DBL_HALFWAY.encode() + b"e309", "not JSON: number out of range at 0"),
    (b"1" * 400, "not JSON: number out of range at 0"),
    # strings
    (b'"a\nb"', "not JSON: unexpected byte 0x0a at 2"),
    (b'"\t"', "not JSON: unexpected byte 0x09 at 1"),
    (b'"\x1f"', "not JSON: unexpected byte 0x1f at 1"),
    (b'"\\x41"', "not JSON: unexpected byte 0x78 at 2"),
    (b'"\\U0041"', "not JSON: unexpected byte 0x55 at 2"),
    (b'"\\u00g1"', "not JSON: unexpected byte 0x67 at 5"),
    (b"'a'", "not JSON: unexpected byte 0x27 at 0"),
    # lone surrogate escapes: RFC 8259 allows them, orjson rejects them, so do we
    (b'"\\ud800"', "not JSON: lone surrogate escape at 1"),
    (b'"\\udc00"', "not JSON: lone surrogate escape at 1"),
    (b'"x\\uDFFF"', "not JSON: lone surrogate escape at 2"),
    (b'"\\ud800\\u0041"', "not JSON: lone surrogate escape at 1"),
    (b'"\\ud800\\ud800"', "not JSON: lone surrogate escape at 1"),
    (b'"\\ud800x"', "not JSON: lone surrogate escape at 1"),
    (b'"\\ude00\\ud83d"', "not JSON: lone surrogate escape at 1"),
    # strict UTF-8
    (b'"\xff"', "not JSON: invalid UTF-8 at 1"),
    (b'"\x80"', "not JSON: invalid UTF-8 at 1"),
    (b'"\xc0\x80"', "not JSON: invalid UTF-8 at 1"),  # overlong NUL
    (b'"\xc1\xbf"', "not JSON: invalid UTF-8 at 1"),
    (b'"\xe0\x80\xaf"', "not JSON: invalid UTF-8 at 1"),  # overlong '/'
    (b'"\xed\xa0\x80"', "not JSON: invalid UTF-8 at 1"),  # UTF-8 encoded surrogate
    (b'"\xf0\x8f\xbf\xbf"', "not JSON: invalid UTF-8 at 1"),  # overlong 4-byte
    (b'"\xf4\x90\x80\x80"', "not JSON: invalid UTF-8 at 1"),  # above U+10FFFF
    (b'"\xf5\x80\x80\x80"', "not JSON: invalid UTF-8 at 1"),
    (b'"ab\xc3"', "not JSON: invalid UTF-8 at 3"),  # truncated by the quote
    (b'"\xc3', "not JSON: invalid UTF-8 at 1"),  # truncated by the end
    (b'"\xe2\x82"', "not JSON: invalid UTF-8 at 1"),
    (b'"\xe2\x28\xa1"', "not JSON: invalid UTF-8 at 1"),
    (b"\xff", "not JSON: invalid UTF-8 at 0"),
    (b"[1, \xfe]", "not JSON: invalid UTF-8 at 4"),
    (b"\xef\xbb\xbf{}", "not JSON: unexpected byte 0xef at 0"),  # a BOM, valid UTF-8 but not JSON
    ("\u00e9".encode(), "not JSON: unexpected byte 0xc3 at 0"),
    # depth
    (b"[" * (MAX_DEPTH + 1) + b"]" * (MAX_DEPTH + 1), f"not JSON: nesting deeper than 1024 at {MAX_DEPTH}"),
    (b'{"a":' * (MAX_DEPTH + 1) + b"1" + b"}" * (MAX_DEPTH + 1), f"not JSON: nesting deeper than 1024 at {5 * MAX_DEPTH}"),
    (b"[" * 100_000, f"not JSON: nesting deeper than 1024 at {MAX_DEPTH}"),
]


def orjson_accepts(doc: bytes) -> bool:
    try:
        orjson.loads(doc)
    except orjson.JSONDecodeError:
        return False
    return True


@pytest.mark.parametrize("doc", VALID, ids=lambda d: repr(d[:30]))
def test_valid_documents_pass(doc):
    """Every valid document gives None, and orjson accepts it too."""
    assert validate_json(doc) is None
    assert orjson_accepts(doc)


@pytest.mark.parametrize(("doc", "reason"), INVALID, ids=lambda d: repr(d[:30]) if isinstance(d, bytes) else None)
def test_invalid_documents_give_their_reason(doc, reason):
    """Every invalid document gives the reason naming its first error, and orjson rejects it too."""
    assert validate_json(doc) == reason
    assert not orjson_accepts(doc)


def test_max_depth_is_1024():
    """The depth limit is orjson's: 1024 nested containers."""
    assert MAX_DEPTH == 1024


def test_bytes_like_inputs_and_type_errors():
    """validate_json takes any contiguous buffer and rejects str with TypeError."""
    assert validate_json(bytearray(b"[1]")) is None
    assert validate_json(memoryview(b"x[1]x")[1:4]) is None
    assert validate_json(memoryview(b"[1]x")[:4]) == "not JSON: unexpected byte 0x78 at 3"
    with pytest.raises(TypeError, match="bytes-like"):
        validate_json("[1]")
    with pytest.raises(TypeError):
        validate_json(None)


def test_large_documents_are_checked_without_the_gil():
    """Documents over 64 KiB (checked with the GIL released) give the same answers."""
    big = orjson.dumps({"k%d" % i: ["v" * 50, i, i * 0.5, None, True] for i in range(5000)})
    assert len(big) > 65536
    assert validate_json(big) is None
    bad = big[:-1] + b",}"
    assert validate_json(bad) == f"not JSON: unexpected byte 0x7d at {len(big)}"


def test_offset_of_an_error_deep_in_a_long_line():
    """The offset counts bytes, multi-byte characters included."""
    doc = '{"msg": "caf\u00e9 \U0001f600", "n": [1, 2, 3,]}'.encode()
    assert validate_json(doc) == f"not JSON: unexpected byte 0x5d at {doc.index(b',]') + 1}"


@pytest.mark.parametrize(
    "special",
    [b'"', b"\\", b"\x00", b"\x1f", b"\x20", b"\x21", b"\x7e", b"\x7f", b"\x80", b"\xff",
     b"\xc3\xa9", b"\xe2\x82", b"\\n", b"\\u00e9", b"\\x"],
)
def test_special_bytes_at_every_position_of_a_word(special):
    """A special byte anywhere in a string gets orjson's verdict and the right offset.

    Positions 0-47 cover every lane of the 16-byte and 8-byte fast paths and
    the byte loop of the tail; ``after`` moves the string's end across them.
    """
    for before in range(0, 48):
        for after in range(0, 20):
            doc = b'"' + b"a" * before + special + b"b" * after + b'"'
            reason = validate_json(doc)
            assert (reason is None) == orjson_accepts(doc), doc
            if special in (b"\x00", b"\x1f"):
                assert reason == f"not JSON: unexpected byte 0x{special[0]:02x} at {1 + before}", doc
            elif special in (b"\x80", b"\xff", b"\xe2\x82"):
                assert reason == f"not JSON: invalid UTF-8 at {1 + before}", doc
            elif special == b'"' and after:
                assert reason == f"not JSON: unexpected byte 0x62 at {2 + before}", doc


@pytest.mark.parametrize("shape", [b"%s", b"-%s", b"0.%s", b"1.%se5", b"[%s]", b'{"n": %s}'])
def test_digit_runs_of_every_length(shape):
    """Integer and fraction digit runs of 1..40 digits (every lane of the
    16- and 8-byte fast paths), with a stray byte at each position, get
    orjson's verdict."""
    for length in range(1, 41):
        digits = b"".join(b"%d" % (1 + i % 9) for i in range(length))
        assert validate_json(shape % digits) is None
        for at in range(length):
            for stray in (b"/", b":", b"a", b" ", b".", b"\x80", b"\xb9", b"\x00"):
                doc = shape % (digits[:at] + stray + digits[at + 1 :])
                assert (validate_json(doc) is None) == orjson_accepts(doc), doc
