"""The one JSON parser of every intake: depth and duplicate keys refused, reasons safe."""

from __future__ import annotations

import orjson
import pytest

from egenmon.jsonbody import MAX_DEPTH, JsonBodyError, loads


def nested(levels: int) -> bytes:
    return b"[" * levels + b"]" * levels


def test_nesting_up_to_the_limit_is_taken_and_one_more_is_refused() -> None:
    assert loads(nested(MAX_DEPTH)) is not None
    with pytest.raises(JsonBodyError, match=f"nested {MAX_DEPTH + 1} levels deep"):
        loads(nested(MAX_DEPTH + 1))


@pytest.mark.parametrize("levels", [255, 300, 1023, 1025, 5000])
def test_deep_bodies_are_refused_naming_the_depth_not_crashing(levels: int) -> None:
    with pytest.raises(JsonBodyError) as caught:
        loads(b'{"readings": [' + b'{"a": ' * levels + b"1" + b"}" * levels + b"]}")
    assert "levels deep" in str(caught.value)


def test_brackets_and_quotes_inside_strings_do_not_count_as_nesting() -> None:
    text = "[" * 200 + '\\"' + "{" * 200
    assert loads(orjson.dumps({"note": text, "k": '\\"'})) == {"note": text, "k": '\\"'}


def test_a_repeated_key_is_refused_naming_it_not_last_wins() -> None:
    with pytest.raises(JsonBodyError, match='the key "value" twice'):
        loads(b'{"readings": [{"type": "heart_rate", "value": 400, "value": 72}]}')


@pytest.mark.parametrize(
    ("raw", "key"),
    [
        (b'{"a": {"b": 1}, "a": {"b": 1}}', '"a"'),  # the same value twice is still refused
        (b'{"\\u0061": 1, "a": 2}', '"a"'),  # escaped spelling of the same key
        (b'{"x\\u0000y": 1, "x\\u0000y": 2}', '"x\\u0000y"'),  # NUL escaped in the reason
        (b'{"a\\\\": 1, "a\\\\": 2}', '"a\\\\"'),
        (b'[{"ok": 1}, {"k": 1, "k": 2}]', '"k"'),
    ],
)
def test_repeated_keys_are_named_escaped(raw: bytes, key: str) -> None:
    with pytest.raises(JsonBodyError) as caught:
        loads(raw)
    reason = str(caught.value)
    assert f"the key {key} twice" in reason
    assert "\x00" not in reason


def test_the_same_key_in_different_objects_is_fine() -> None:
    body = b'{"readings": [{"value": 1, "unit": "/min"}, {"value": 2, "unit": "/min"}]}'
    assert loads(body)["readings"][1]["value"] == 2


def test_a_long_repeated_key_is_cut_short_in_the_reason() -> None:
    key = "k" * 5000
    with pytest.raises(JsonBodyError) as caught:
        loads(orjson.dumps({key: 1})[:-1] + b', "' + key.encode() + b'": 2}')
    assert len(str(caught.value)) < 300


@pytest.mark.parametrize("raw", [b"", b"{", b'{"a": NaN}', b"\xff", b'{"a": "\\ud800"}'])
def test_what_is_not_json_is_refused_as_such(raw: bytes) -> None:
    with pytest.raises(JsonBodyError, match="is not JSON"):
        loads(raw)


@pytest.mark.parametrize("raw", [b"1", b'"s"', b"null", b"[]", b"{}", '{"å": "ä"}'])
def test_plain_json_parses_as_orjson_does(raw: bytes | str) -> None:
    assert loads(raw) == orjson.loads(raw)


@pytest.mark.parametrize(
    "raw",
    [
        b'{"x\\u0000y": 1}',
        b'{"readings": [{"note": "a\\u0000b"}]}',
        b'["\\u0000"]',
    ],
)
def test_nul_in_a_key_or_string_is_refused_without_repeating_it(raw: bytes) -> None:
    with pytest.raises(JsonBodyError) as caught:
        loads(raw)
    assert "NUL" in str(caught.value) and "\x00" not in str(caught.value)


def test_an_escaped_backslash_before_u0000_is_not_a_nul() -> None:
    assert loads(b'{"note": "a\\\\u0000"}') == {"note": "a\\u0000"}
