"""`egenmon client add|list|remove`: SMART clients registered from the command line."""

from __future__ import annotations

import json
from pathlib import Path

import jwt
from cryptography.hazmat.primitives.asymmetric import ec


def test_clients_are_added_listed_and_removed_and_bad_registrations_refused(
    cli, tmp_path: Path
) -> None:
    private = ec.generate_private_key(ec.SECP384R1())
    public = jwt.algorithms.ECAlgorithm.to_jwk(private.public_key(), as_dict=True)
    jwks = tmp_path / "jwks.json"
    jwks.write_text(json.dumps({"keys": [public]}))
    r = cli("client", "add", "--name", "Regionens integration", "--jwks", str(jwks),
            "--scope", "system/Observation.rs", "system/AuditEvent.rs", "--json")  # fmt: skip
    assert r.code == 0, r.err
    backend = r.json
    assert backend["type"] == "confidential" and backend["client_id"].startswith("regionens-")
    r = cli("client", "add", "--name", "Mina mätvärden", "--scope", "patient/Observation.rs",
            "--scope", "launch/patient", "--redirect-uri", "https://app.example.org/cb",
            "--origin", "https://App.example.org", "--json")  # fmt: skip
    assert r.code == 0, r.err
    assert r.json["type"] == "public" and r.json["origins"] == ["https://app.example.org"]
    listed = cli("client", "list", "--json").json["clients"]
    assert {c["client_id"] for c in listed} == {backend["client_id"], r.json["client_id"]}
    assert cli("client", "remove", backend["client_id"], "--json").code == 0
    assert [c["client_id"] for c in cli("client", "list", "--json").json["clients"]] == [
        r.json["client_id"]
    ]
    assert cli("client", "remove", backend["client_id"]).code == 2

    secret = tmp_path / "private.json"
    secret.write_text(
        json.dumps({"keys": [jwt.algorithms.ECAlgorithm.to_jwk(private, as_dict=True)]})
    )
    refused = {
        "private key": ("--jwks", str(secret), "--scope", "system/*.rs"),
        "not a scope": ("--jwks", str(jwks), "--scope", "everything"),
        "system without keys": ("--redirect-uri", "https://a.example/cb", "--scope", "system/*.rs"),
        "plain http": ("--redirect-uri", "http://a.example/cb", "--scope", "patient/*.rs"),
        "origin with path": ("--redirect-uri", "https://a.example/cb", "--origin",
                             "https://a.example/app", "--scope", "patient/*.rs"),
        "no JSON": ("--jwks", str(tmp_path), "--scope", "system/*.rs"),
    }  # fmt: skip
    for why, args in refused.items():
        r = cli("client", "add", "--name", "x", *args)
        assert r.code == 2, why
        assert r.err.startswith("egenmon: "), why


def test_a_clinician_token_names_a_patient_of_their_own_unit_only(cli, care_unit, patient) -> None:
    other = cli("care-unit", "add", "--name", "Annan", "--hsa-id", "SE2321000016-ZZZZ", "--json")
    args = ("token", "issue", "--role", "clinician", "--patient", patient, "--json")
    assert cli(*args, "--care-unit", care_unit).code == 0
    refused = cli(*args, "--care-unit", other.json["id"])
    assert refused.code == 2 and "care unit" in refused.err
