"""Logins and sessions against the real app and database: argon2 hashes, the session
cookie, CSRF refusal, login throttling, expiry, logout."""

from __future__ import annotations

import datetime as dt
import re

from tests.web.conftest import PASSWORD, csrf_of, login


def test_user_add_stores_an_argon2id_hash_never_the_password(make_user, care_unit, conn):
    made = make_user("anna.nurse", care_unit, name="Anna Sköterska")
    row = conn.execute(
        "SELECT username, password_hash, role, care_unit_id::text, locale FROM users WHERE id = %s",
        (made["id"],),
    ).fetchone()
    assert row[0] == "anna.nurse"
    assert row[1].startswith("$argon2id$")
    assert PASSWORD not in row[1]
    assert (row[2], row[3], row[4]) == ("clinician", care_unit, "sv")


def test_user_add_refuses_a_short_password_and_a_clinician_without_unit(cli, care_unit):
    r = cli("user", "add", "--username", "bo", "--care-unit", care_unit, stdin="short\n")
    assert r.code == 2 and "at least 12 characters" in r.err
    r = cli("user", "add", "--username", "bo", stdin=PASSWORD + "\n")
    assert r.code == 2 and "--care-unit" in r.err
    r = cli("user", "add", "--username", "bo", "--care-unit", "no-such-unit", stdin=PASSWORD + "\n")
    assert r.code == 2 and "care unit" in r.err


def test_user_add_refuses_a_taken_username(make_user, cli, care_unit):
    make_user("anna", care_unit)
    r = cli("user", "add", "--username", "ANNA", "--care-unit", care_unit, stdin=PASSWORD + "\n")
    assert r.code == 2 and "exists already" in r.err


def test_login_sets_an_httponly_samesite_session_cookie_stored_only_hashed(
    client, make_user, care_unit, conn
):
    make_user("anna", care_unit)
    r = login(client, "anna")
    assert r.status_code == 303 and r.headers["location"] == "/ui/"
    cookie = r.headers["set-cookie"]
    assert "egenmon_session=" in cookie and "HttpOnly" in cookie
    assert "SameSite=lax" in cookie or "SameSite=Lax" in cookie
    assert "Secure" not in cookie  # plain http here; https adds it
    value = client.cookies.get("egenmon_session")
    stored = conn.execute("SELECT id_sha256 FROM sessions").fetchall()
    assert len(stored) == 1 and value.encode() not in stored[0][0]
    page = client.get("/ui/")
    assert page.status_code == 200 and "Arbetslista" in page.text


def test_wrong_password_is_refused_with_a_generic_message(client, make_user, care_unit):
    make_user("anna", care_unit)
    r = login(client, "anna", "not-the-right-password")
    assert r.status_code == 401
    assert "Inloggningen misslyckades" in r.text
    assert "egenmon_session" not in r.headers.get("set-cookie", "")
    unknown = login(client, "nobody", "not-the-right-password")
    assert unknown.status_code == 401 and "Inloggningen misslyckades" in unknown.text


def from_address(client, address: str) -> None:
    """Make the test client's next requests come from `address` (the ASGI scope's client,
    which uvicorn fills from the socket or a trusted proxy's X-Forwarded-For)."""
    client._transport.client = (address, 50000)


def login_error(r) -> tuple[int, str]:
    """What a refused login tells: the status and the error shown (nothing else differs)."""
    m = re.search(r'id="login-error">([^<]*)<', r.text)
    assert m, r.text
    return r.status_code, m.group(1)


def test_a_paused_login_answers_exactly_like_a_wrong_password_and_an_unknown_name(
    client, make_user, care_unit, conn
):
    make_user("anna", care_unit)
    from_address(client, "192.0.2.10")
    wrong = [login(client, "anna", "wrong-password-guess") for _ in range(5)]
    unknown = [login(client, "nobody", "wrong-password-guess") for _ in range(5)]
    # Paused for this address now: even the right password is refused ...
    right = login(client, "anna")
    paused_unknown = login(client, "nobody", "wrong-password-guess")
    # ... and every one of these answers is the same, status and words.
    answers = {login_error(r) for r in [*wrong, *unknown, right, paused_unknown]}
    assert answers == {(401, "Inloggningen misslyckades. Kontrollera användarnamn och lösenord.")}
    assert "egenmon_session" not in right.headers.get("set-cookie", "")
    paused = conn.execute(
        "SELECT username FROM login_throttle WHERE kind = 'account' AND blocked_until > now()"
        " ORDER BY username"
    ).fetchall()
    assert paused == [("anna",), ("nobody",)]
    # The account itself is not locked.
    assert conn.execute("SELECT locked_until FROM users").fetchone()[0] is None


def test_nobody_can_lock_a_clinician_out_from_elsewhere(client, make_user, care_unit):
    make_user("anna", care_unit)
    from_address(client, "198.51.100.66")
    for _ in range(7):
        assert login(client, "anna", "an-attackers-guess").status_code == 401
    from_address(client, "192.0.2.10")
    assert login(client, "anna").status_code == 303


def test_a_pause_runs_out_and_an_administrator_can_lift_it(client, make_user, care_unit, conn, cli):
    make_user("anna", care_unit)
    from_address(client, "192.0.2.10")
    for _ in range(5):
        login(client, "anna", "wrong-password-guess")
    assert login(client, "anna").status_code == 401
    conn.execute("UPDATE login_throttle SET blocked_until = now() - interval '1 second'")
    assert login(client, "anna").status_code == 303
    client.cookies.clear()
    for _ in range(5):
        login(client, "anna", "wrong-password-guess")
    assert login(client, "anna").status_code == 401
    assert cli("user", "unlock", "--username", "anna").code == 0
    assert login(client, "anna").status_code == 303


def test_an_address_that_keeps_failing_gets_429_with_retry_after(
    client, make_user, care_unit, conn, monkeypatch
):
    from egenmon.web import accounts

    monkeypatch.setattr(accounts, "ADDRESS_FREE", 3)
    # Long enough that the test's own pace never outlasts a block.
    monkeypatch.setattr(accounts, "ADDRESS_FIRST_BLOCK", dt.timedelta(minutes=1))
    make_user("anna", care_unit)
    from_address(client, "203.0.113.9")
    for name in ("a1", "a2", "a3"):
        assert login(client, name, "guess-guess-guess").status_code == 401
    # The fourth failure blocks the address (whatever names it tries next).
    assert login(client, "a4", "guess-guess-guess").status_code == 401
    for name in ("a5", "anna"):
        r = login(client, name, "guess-guess-guess")
        assert r.status_code == 429
        assert int(r.headers["retry-after"]) >= 1
        assert "Försök igen om" in login_error(r)[1]
    # The right password waits too; the block is per address, not per account.
    assert login(client, "anna").status_code == 429
    from_address(client, "192.0.2.10")
    assert login(client, "anna").status_code == 303
    # Each further failure doubles the block.
    assert [accounts.address_block(n) for n in (3, 4, 5, 6)] == [
        None,
        dt.timedelta(minutes=1),
        dt.timedelta(minutes=2),
        dt.timedelta(minutes=4),
    ]
    assert accounts.address_block(10_000) == accounts.ADDRESS_MAX_BLOCK
    # When the block is over the address may try again.
    client.cookies.clear()
    from_address(client, "203.0.113.9")
    conn.execute("UPDATE login_throttle SET blocked_until = now() - interval '1 second'")
    assert login(client, "anna").status_code == 303


def test_login_form_without_its_csrf_token_is_refused(client, make_user, care_unit):
    make_user("anna", care_unit)
    client.get("/login")
    r = client.post(
        "/login", data={"username": "anna", "password": PASSWORD, "csrf_token": "forged"}
    )
    assert r.status_code == 403
    assert "egenmon_session" not in r.headers.get("set-cookie", "")


def test_posts_without_the_sessions_csrf_token_are_refused(client, make_user, care_unit, conn):
    make_user("anna", care_unit)
    login(client, "anna")
    page = client.get("/ui/")
    token = csrf_of(page.text)
    for path, data in (("/ui/locale", {"locale": "en"}), ("/logout", {})):
        r = client.post(path, data=data)
        assert r.status_code == 403, path
        r = client.post(path, data={**data, "csrf_token": token[:-2] + "xx"})
        assert r.status_code == 403, path
    assert conn.execute("SELECT locale FROM users").fetchone()[0] == "sv"
    assert conn.execute("SELECT count(*) FROM sessions").fetchone()[0] == 1


def test_the_json_api_takes_the_session_only_with_the_csrf_header(client, make_user, care_unit):
    make_user("anna", care_unit)
    login(client, "anna")
    token = csrf_of(client.get("/ui/").text)
    assert client.get("/api/v1/alerts").status_code == 200
    bogus = "00000000-0000-0000-0000-000000000000"
    no_header = client.post(f"/api/v1/alerts/{bogus}/acknowledge", json={"note": "x"})
    assert no_header.status_code == 401
    with_header = client.post(
        f"/api/v1/alerts/{bogus}/acknowledge", json={"note": "x"}, headers={"X-CSRF-Token": token}
    )
    assert with_header.status_code == 404  # authenticated; the alert does not exist


def test_logout_ends_the_session_and_the_old_cookie_no_longer_works(
    client, make_user, care_unit, conn
):
    make_user("anna", care_unit)
    login(client, "anna")
    old = client.cookies.get("egenmon_session")
    token = csrf_of(client.get("/ui/").text)
    r = client.post("/logout", data={"csrf_token": token})
    assert r.status_code == 303 and r.headers["location"].startswith("/login")
    assert conn.execute("SELECT count(*) FROM sessions").fetchone()[0] == 0
    client.cookies.set("egenmon_session", old, domain="testserver.local")
    again = client.get("/ui/")
    assert again.status_code == 303 and again.headers["location"].startswith("/login")


def test_expired_and_idle_sessions_are_refused(client, make_user, care_unit, conn):
    make_user("anna", care_unit)
    login(client, "anna")
    assert client.get("/ui/").status_code == 200
    conn.execute("UPDATE sessions SET expires_at = now() - interval '1 second'")
    assert client.get("/ui/").status_code == 303
    conn.execute(
        "UPDATE sessions SET expires_at = now() + interval '1 hour',"
        " last_seen_at = now() - interval '31 minutes'"
    )
    assert client.get("/ui/").status_code == 303
    conn.execute("UPDATE sessions SET last_seen_at = now() - interval '29 minutes'")
    assert client.get("/ui/").status_code == 200


def test_polling_does_not_keep_an_idle_session_alive(client, make_user, care_unit, conn):
    make_user("anna", care_unit)
    login(client, "anna")
    conn.execute("UPDATE sessions SET last_seen_at = now() - interval '10 minutes'")
    r = client.get("/ui/worklist/table", headers={"X-Egenmon-Poll": "1"})
    assert r.status_code == 200
    idle = conn.execute("SELECT now() - last_seen_at > interval '9 minutes' FROM sessions")
    assert idle.fetchone()[0]
    client.get("/ui/")
    fresh = conn.execute("SELECT now() - last_seen_at < interval '1 minute' FROM sessions")
    assert fresh.fetchone()[0]


def test_a_login_never_keeps_a_session_id_planted_before_it(client, make_user, care_unit, conn):
    make_user("anna", care_unit)
    make_user("bert", care_unit)
    login(client, "bert")
    planted = client.cookies.get("egenmon_session")
    client.cookies.clear()
    page = client.get("/login")
    client.cookies.set("egenmon_session", planted, domain="testserver.local")
    r = client.post(
        "/login", data={"username": "anna", "password": PASSWORD, "csrf_token": csrf_of(page.text)}
    )
    assert r.status_code == 303
    assert client.cookies.get("egenmon_session") != planted
    names = conn.execute("SELECT u.username FROM sessions s JOIN users u ON u.id = s.user_id")
    assert [n for (n,) in names] == ["anna"]


def test_the_ui_redirects_to_login_and_back(client, make_user, care_unit):
    target = "/ui/patients/00000000-0000-0000-0000-000000000000"
    r = client.get(target)
    assert r.status_code == 303
    assert r.headers["location"] == "/login?next=" + target
    make_user("anna", care_unit)
    page = client.get(r.headers["location"])
    assert f'name="next" value="{target}"' in page.text
    after = client.post(
        "/login",
        data={
            "username": "anna",
            "password": PASSWORD,
            "csrf_token": csrf_of(page.text),
            "next": target,
        },
    )
    assert after.headers["location"] == target
    evil = client.post("/logout", data={"csrf_token": csrf_of(client.get("/ui/").text)})
    assert evil.status_code == 303
    page = client.get("/login")
    r = client.post(
        "/login",
        data={
            "username": "anna",
            "password": PASSWORD,
            "csrf_token": csrf_of(page.text),
            "next": "//evil.example/",
        },
    )
    assert r.headers["location"] == "/ui/"


def test_over_https_the_session_cookie_is_secure(client, make_user, care_unit):
    make_user("anna", care_unit)
    page = client.get("https://testserver/login")
    assert "Secure" in page.headers["set-cookie"]  # the login CSRF cookie too
    r = client.post(
        "https://testserver/login",
        data={"username": "anna", "password": PASSWORD, "csrf_token": csrf_of(page.text)},
    )
    assert r.status_code == 303
    cookie = [c for c in r.headers.get_list("set-cookie") if "egenmon_session=" in c]
    assert cookie and "Secure" in cookie[0] and "HttpOnly" in cookie[0]
