import re
from datetime import UTC, datetime, timedelta, timezone

import pytest

from egenmon.domain.ids import (
    decode_cursor,
    dedup_digest,
    encode_cursor,
    observation_id,
    parse_observation_id,
)

FHIR_ID = re.compile(r"[A-Za-z0-9\-\.]{1,64}")
T = datetime(2026, 11, 24, 6, 31, 0, 123456, tzinfo=UTC)
KEY = "omron-7361t-0042|blood_pressure|2026-11-24T06:31:00.123456Z"


def test_observation_id_is_a_valid_fhir_id_and_round_trips() -> None:
    oid = observation_id(T, KEY)
    assert FHIR_ID.fullmatch(oid)
    assert len(oid) == 31
    time, digest = parse_observation_id(oid)
    assert time == T
    assert digest == dedup_digest(KEY)


def test_observation_id_is_stable_and_names_the_dedup_key() -> None:
    assert observation_id(T, KEY) == observation_id(T, KEY)
    assert observation_id(T, KEY) != observation_id(T, KEY + "x")
    assert observation_id(T, KEY) != observation_id(T + timedelta(microseconds=1), KEY)


def test_observation_id_ignores_the_offset_the_time_is_given_in() -> None:
    local = T.astimezone(timezone(timedelta(hours=1)))
    assert observation_id(local, KEY) == observation_id(T, KEY)


def test_observation_ids_sort_by_time() -> None:
    times = [datetime(1970, 1, 1, tzinfo=UTC), datetime(2001, 1, 1, tzinfo=UTC), T]
    ids = [observation_id(t, KEY) for t in times]
    assert ids == sorted(ids)


def test_observation_id_carries_no_personnummer() -> None:
    key = "dev-1|191212121212"
    assert "191212121212" not in observation_id(T, key)


def test_observation_id_refuses_naive_and_pre_epoch_times() -> None:
    with pytest.raises(ValueError):
        observation_id(datetime(2026, 11, 24), KEY)
    with pytest.raises(ValueError):
        observation_id(datetime(1969, 12, 31, 23, 59, tzinfo=UTC), KEY)


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "0660ffda8f1100",
        "0660ffda8f1100-027ee189b07d752",  # digest one short
        "0660ffda8f1100-027ee189b07d752dd",  # one long
        "660ffda8f1100-027ee189b07d752d",  # time one short
        "0660FFDA8F1100-027ee189b07d752d",  # ids are case-sensitive: one form only
        "0660ffda8f1100_027ee189b07d752d",
        "0660ffda8f110g-027ee189b07d752d",
        " 0660ffda8f1100-027ee189b07d752d",
    ],
)
def test_parse_observation_id_rejects_malformed_ids(bad: str) -> None:
    with pytest.raises(ValueError):
        parse_observation_id(bad)


def test_cursor_round_trips_unsigned_and_signed() -> None:
    token = encode_cursor(T, KEY)
    assert re.fullmatch(r"[A-Za-z0-9_-]+", token)
    assert decode_cursor(token) == (T, KEY)
    signed = encode_cursor(T, KEY, key=b"secret")
    assert re.fullmatch(r"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+", signed)
    assert decode_cursor(signed, key=b"secret") == (T, KEY)
    assert decode_cursor(signed, key="secret") == (T, KEY)


def test_cursor_keeps_non_ascii_dedup_keys() -> None:
    key = "våg-1|ä"
    assert decode_cursor(encode_cursor(T, key, key=b"k"), key=b"k") == (T, key)


def _flip(token: str, i: int) -> str:
    c = token[i]
    return token[:i] + ("A" if c != "A" else "B") + token[i + 1 :]


def test_tampered_signed_cursor_is_rejected() -> None:
    signed = encode_cursor(T, KEY, key=b"secret")
    body, _, tag = signed.partition(".")
    for i in range(len(body)):
        with pytest.raises(ValueError):
            decode_cursor(_flip(body, i) + "." + tag, key=b"secret")
    with pytest.raises(ValueError):
        decode_cursor(body + "." + _flip(tag, 0), key=b"secret")
    with pytest.raises(ValueError):
        decode_cursor(body, key=b"secret")  # signature stripped
    with pytest.raises(ValueError):
        decode_cursor(signed, key=b"another key")


def test_forged_cursor_with_other_content_is_rejected_when_signed() -> None:
    forged = encode_cursor(T - timedelta(days=1), KEY)  # unsigned, made by a client
    _, _, tag = encode_cursor(T, KEY, key=b"secret").partition(".")
    with pytest.raises(ValueError):
        decode_cursor(f"{forged}.{tag}", key=b"secret")


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "!!!",
        "a",  # not base64 of anything
        "bm90IGpzb24",  # base64 of "not json"
        "WzEsMiwzXQ",  # base64 of [1,2,3]
        "eyJ2IjoxLCJ0IjoxfQ",  # {"v":1,"t":1}: no key
        "eyJ2IjoyLCJ0IjoxLCJrIjoiYSJ9",  # {"v":2,...}: unknown version
        "eyJ2Ijp0cnVlLCJ0IjoxLCJrIjoiYSJ9",  # {"v":true,...}
        "eyJ2IjoxLCJ0IjoiMSIsImsiOiJhIn0",  # "t" a string
        "eyJ2IjoxLCJ0IjoxLCJrIjoiIn0",  # empty key
        "eyJ2IjoxLCJ0IjoxZTMwLCJrIjoiYSJ9",  # t = 1e30 (a float)
        "eyJ2IjoxLCJ0IjoxMDAwMDAwMDAwMDAwMDAwMDAwMDAwLCJrIjoiYSJ9",  # t out of range
        "x" * 5000,
    ],
)
def test_malformed_cursor_is_rejected(bad: str) -> None:
    with pytest.raises(ValueError):
        decode_cursor(bad)


def test_hand_made_valid_cursor_decodes() -> None:
    # The control for the malformed cases above: the same encoding, well formed.
    assert decode_cursor("eyJ2IjoxLCJ0IjoxLCJrIjoiYSJ9") == (
        datetime(1970, 1, 1, 0, 0, 0, 1, tzinfo=UTC),
        "a",
    )


def test_unsigned_decoder_rejects_a_signed_token() -> None:
    with pytest.raises(ValueError):
        decode_cursor(encode_cursor(T, KEY, key=b"secret"))
