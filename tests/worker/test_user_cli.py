"""``cxr-triage user`` and ``audit``: accounts made and changed by an administrator, as real
CLI processes on a real database (SQLite and PostgreSQL), each change in the audit log."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from db.engine import make_engine, make_session_factory
from db.passwords import verify_password
from db.worklist import Arrival, admit, review_history
from tests.processes import CLI, cli, cli_json, service_env

PASSWORD = "a long enough passphrase"


def run(args: list[str], env: dict[str, str], input: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CLI, *args], env=env, input=input, capture_output=True, text=True, timeout=120
    )


@pytest.fixture
def env(database_url: str, tmp_path: Path) -> dict[str, str]:
    return service_env(tmp_path, database_url, None, USER="ops-anna", LOGNAME="ops-anna")


def test_accounts_are_added_changed_and_audited_from_the_cli(env: dict[str, str], database_url):
    added = cli(["user", "add", "Dr.Mira", "--role", "reviewer"], env, input=PASSWORD + "\n")
    assert "account dr.mira added (role reviewer)" in added.stdout
    assert PASSWORD not in added.stdout + added.stderr
    cli(["user", "add", "clerk", "--role", "reader"], env, input=PASSWORD + "\n")
    listed = {a["name"]: a for a in cli_json(["user", "list", "--json"], env)}
    assert {n: (a["role"], a["state"]) for n, a in listed.items()} == {
        "clerk": ("reader", "enabled"),
        "dr.mira": ("reviewer", "enabled"),
    }
    cli(["user", "set-role", "clerk", "reviewer"], env)
    cli(["user", "set-password", "clerk"], env, input="another long passphrase\n")
    cli(["user", "disable", "dr.mira"], env)
    table = cli(["user", "list"], env).stdout
    assert "dr.mira" in table and "disabled" in table and "argon2" not in table
    cli(["user", "enable", "dr.mira"], env)
    cli(["user", "unlock", "dr.mira"], env)
    engine = make_engine(database_url)
    try:
        with make_session_factory(engine)() as session:
            from db import accounts

            clerk = accounts.find(session, "CLERK")
            assert clerk is not None and clerk.role == "reviewer"
            assert clerk.password_hash is not None and clerk.password_hash.startswith("$argon2id$")
            assert verify_password(clerk.password_hash, "another long passphrase")
            assert not verify_password(clerk.password_hash, PASSWORD)
    finally:
        engine.dispose()
    trail = cli_json(["audit", "--json", "--since", "1h"], env)
    assert [(e["event"], e["actor"], e["via"]) for e in reversed(trail)] == [
        ("account_added", "cli:ops-anna", "cli"),
        ("account_added", "cli:ops-anna", "cli"),
        ("role_set", "cli:ops-anna", "cli"),
        ("password_set", "cli:ops-anna", "cli"),
        ("account_disabled", "cli:ops-anna", "cli"),
        ("account_enabled", "cli:ops-anna", "cli"),
        ("account_unlocked", "cli:ops-anna", "cli"),
    ]
    assert trail[-3]["detail"] == "reader -> reviewer"
    printed = cli(["audit", "--account", "clerk"], env).stdout
    assert "role_set" in printed and "account_enabled" not in printed


@pytest.mark.parametrize(
    ("args", "password", "message"),
    [
        (["user", "add", "shorty", "--role", "reader"], "too short", "at least 12"),
        (["user", "add", "anna", "--role", "reader"], "anna-is-my-password", "account's name"),
        (["user", "add", "bad name", "--role", "reader"], PASSWORD, "account name is"),
        (["user", "add", "x:y", "--role", "reader"], PASSWORD, "account name is"),
        (["user", "add", "ok", "--role", "superuser"], PASSWORD, "superuser"),
        (["user", "disable", "nobody"], "", "no account 'nobody'"),
        (["user", "set-role", "nobody", "admin"], "", "no account 'nobody'"),
    ],
)
def test_bad_names_passwords_and_accounts_are_refused(
    env: dict[str, str], args: list[str], password: str, message: str
):
    result = run(args, env, input=password + "\n")
    assert result.returncode != 0
    assert message in result.stderr + result.stdout
    assert cli_json(["user", "list", "--json"], env) == []


def test_a_duplicate_account_is_refused(env: dict[str, str]):
    cli(["user", "add", "dr.mira", "--role", "reviewer"], env, input=PASSWORD + "\n")
    again = run(["user", "add", "DR.MIRA", "--role", "admin"], env, input=PASSWORD + "\n")
    assert again.returncode == 1 and "exists already" in again.stderr


def test_a_cli_review_names_an_enabled_reviewer_account_and_is_audited(
    env: dict[str, str], database_url: str
):
    engine = make_engine(database_url)
    with make_session_factory(engine).begin() as session:
        row, _ = admit(session, Arrival("a" * 64, "x.dcm", "/inbox/x.dcm"))
        row_id = row.id
    review = ["review", str(row_id), "--decision", "agree"]
    refused = run([*review, "--by", "someone"], env)
    assert refused.returncode == 1 and "no account 'someone'" in refused.stderr
    cli(["user", "add", "clerk", "--role", "reader"], env, input=PASSWORD + "\n")
    as_reader = run([*review, "--by", "clerk"], env)
    assert as_reader.returncode == 1 and "may not record reviews" in as_reader.stderr
    cli(["user", "add", "dr.mira", "--role", "reviewer"], env, input=PASSWORD + "\n")
    assert "by dr.mira" in cli([*review, "--by", "Dr.Mira"], env).stdout
    with make_session_factory(engine)() as session:
        assert [h.reviewed_by for h in review_history(session, row_id)] == ["dr.mira"]
    engine.dispose()
    last = cli_json(["audit", "--json", "--limit", "1"], env)[0]
    assert (last["event"], last["actor"], last["worklist_id"]) == ("review", "cli:ops-anna", row_id)
