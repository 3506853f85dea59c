"""The demo clinician of `egenmon dev`: made once, printed on every start."""

from __future__ import annotations

import stat

from egenmon.dev.demo import DEMO_HSA_ID, seed_clinician
from egenmon.dev.devenv import demo_logins
from egenmon.web.accounts import verify_password


def test_seed_clinician_makes_one_login_and_keeps_its_password(conn, tmp_path):
    username, password = seed_clinician(conn, tmp_path)
    again = seed_clinician(conn, tmp_path)
    assert again == (username, password)
    rows = conn.execute(
        "SELECT u.password_hash, u.role, c.hsa_id FROM users u"
        " JOIN care_units c ON c.id = u.care_unit_id"
    ).fetchall()
    assert len(rows) == 1
    password_hash, role, hsa_id = rows[0]
    assert role == "clinician" and hsa_id == DEMO_HSA_ID
    assert verify_password(password_hash, password)
    saved = tmp_path / "demo-login.json"
    assert stat.S_IMODE(saved.stat().st_mode) == 0o600
    lines = demo_logins(tmp_path)
    assert len(lines) == 1 and username in lines[0] and password in lines[0]


def test_a_reset_database_gets_the_same_demo_login_back(conn, tmp_path):
    first = seed_clinician(conn, tmp_path)
    conn.execute("DELETE FROM users")
    assert seed_clinician(conn, tmp_path) == first
    assert conn.execute("SELECT count(*) FROM users").fetchone()[0] == 1


def test_no_demo_login_lines_before_the_seed(tmp_path):
    assert demo_logins(tmp_path) == []


def test_a_lost_state_folder_gets_a_working_new_password(conn, tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    username, first = seed_clinician(conn, tmp_path / "a")
    _, second = seed_clinician(conn, tmp_path / "b")
    assert second != first
    (stored,) = conn.execute(
        "SELECT password_hash FROM users WHERE username = %s", (username,)
    ).fetchone()
    assert verify_password(stored, second) and not verify_password(stored, first)
