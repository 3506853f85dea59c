import datetime as dt

import pytest

from egenmon.domain.identifiers import (
    IdentifierError,
    luhn_digit,
    parse_personal_identity,
    system_kind,
)


@pytest.mark.parametrize(
    ("text", "number", "kind"),
    [
        ("191212121212", "191212121212", "personnummer"),
        ("19121212-1212", "191212121212", "personnummer"),
        ("200002292381", "200002292381", "personnummer"),  # leap day
        ("199001720003", "199001720003", "samordningsnummer"),  # day 12 + 60
        ("19900131-2389", "199001312389", "personnummer"),
    ],
)
def test_valid_numbers_parse_to_twelve_digits_and_kind(text, number, kind):
    ident = parse_personal_identity(text)
    assert (ident.number, ident.kind) == (number, kind)


def test_samordningsnummer_birth_date_subtracts_sixty():
    assert parse_personal_identity("199001720003").birth_date == dt.date(1990, 1, 12)


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("191212121213", "check digit"),
        ("191212121211", "check digit"),
        ("199002300003", "calendar date"),  # 30 February
        ("190002292381", "calendar date"),  # 1900 is no leap year
        ("199013010005", "calendar date"),  # month 13
        ("199001920009", "calendar date"),  # day 92 - 60 = 32
        ("12121212", "twelve digits"),
        ("19121212_1212", "twelve digits"),
        ("abcdefghijkl", "twelve digits"),
        ("", "twelve digits"),
    ],
)
def test_invalid_numbers_are_refused_with_the_reason(text, reason):
    with pytest.raises(IdentifierError, match=reason) as e:
        parse_personal_identity(text)
    # The message must not echo the number (it is sensitive).
    if text:
        assert text not in str(e.value)


def test_luhn_digit_of_the_test_personnummer():
    assert luhn_digit("121212121") == 2


@pytest.mark.parametrize(
    ("system", "kind"),
    [
        ("http://electronichealth.se/identifier/personnummer", "personnummer"),
        ("urn:oid:1.2.752.129.2.1.3.1", "personnummer"),
        ("http://electronichealth.se/identifier/samordningsnummer", "samordningsnummer"),
        ("urn:oid:1.2.752.129.2.1.3.3", "samordningsnummer"),
        ("urn:oid:1.2.3", None),
    ],
)
def test_identifier_systems_accept_uri_and_oid(system, kind):
    assert system_kind(system) == kind
