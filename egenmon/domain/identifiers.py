"""Swedish personal identity numbers: personnummer and samordningsnummer.

Skatteverket's rules: YYYYMMDD-NNNC, C the Luhn check digit over the ten digits
YYMMDDNNN; a samordningsnummer adds 60 to the day. Stored as twelve digits.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass

PERSONNUMMER_SYSTEM = "http://electronichealth.se/identifier/personnummer"
SAMORDNINGSNUMMER_SYSTEM = "http://electronichealth.se/identifier/samordningsnummer"
PERSONNUMMER_OID = "urn:oid:1.2.752.129.2.1.3.1"
SAMORDNINGSNUMMER_OID = "urn:oid:1.2.752.129.2.1.3.3"
HSA_ID_SYSTEM = "urn:oid:1.2.752.29.4.19"

_FORM = re.compile(r"^(\d{8})[-+]?(\d{4})$")


class IdentifierError(ValueError):
    """An identity number that is not valid; the message says why (without echoing it)."""


@dataclass(frozen=True)
class PersonalIdentity:
    number: str  # twelve digits
    kind: str  # "personnummer" or "samordningsnummer"

    @property
    def system(self) -> str:
        return PERSONNUMMER_SYSTEM if self.kind == "personnummer" else SAMORDNINGSNUMMER_SYSTEM

    @property
    def birth_date(self) -> dt.date:
        day = int(self.number[6:8])
        return dt.date(int(self.number[:4]), int(self.number[4:6]), day - 60 if day > 60 else day)


def luhn_digit(nine: str) -> int:
    """The Luhn check digit for nine digits (weights 2,1,2,1,...)."""
    total = 0
    for i, ch in enumerate(nine):
        d = int(ch) * (2 if i % 2 == 0 else 1)
        total += d - 9 if d > 9 else d
    return (10 - total % 10) % 10


def parse_personal_identity(text: str) -> PersonalIdentity:
    """Validate a twelve-digit personnummer or samordningsnummer (hyphen optional)."""
    m = _FORM.match(text.strip())
    if not m:
        raise IdentifierError("must be twelve digits, YYYYMMDDNNNC (a hyphen before NNNC allowed)")
    number = m.group(1) + m.group(2)
    year, month, day = int(number[:4]), int(number[4:6]), int(number[6:8])
    kind = "personnummer"
    if day > 60:
        kind, day = "samordningsnummer", day - 60
    try:
        dt.date(year, month, day)
    except ValueError:
        raise IdentifierError("the date part is not a valid calendar date") from None
    if int(number[11]) != luhn_digit(number[2:11]):
        raise IdentifierError("the check digit does not match (Luhn)")
    return PersonalIdentity(number, kind)


def system_kind(system: str) -> str | None:
    """Which identifier kind a FHIR identifier system names, accepting URIs and OIDs."""
    return {
        PERSONNUMMER_SYSTEM: "personnummer",
        PERSONNUMMER_OID: "personnummer",
        SAMORDNINGSNUMMER_SYSTEM: "samordningsnummer",
        SAMORDNINGSNUMMER_OID: "samordningsnummer",
    }.get(system)
