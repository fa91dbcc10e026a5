"""`partsflow` refusing what it cannot do: one line that says why, nothing changed,
never a traceback."""

from __future__ import annotations

import json
import socket
import subprocess
from pathlib import Path

import pytest

from shared.auth import UserStore
from tests.processes import cli, embedded_env

DATABASE_OUT_OF_REACH = "postgresql+psycopg://nobody@127.0.0.1:1/x"


def assert_one_line_refusal(result: subprocess.CompletedProcess, *words: str) -> None:
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    [line] = result.stderr.strip().splitlines()
    for word in words:
        assert word in line


class TestUsersAdd:
    def test_a_name_that_exists_with_another_role_is_refused_and_nothing_changes(
        self, tmp_path: Path
    ) -> None:
        env = embedded_env(tmp_path)
        first = cli("users", "add", "ana", "--role", "viewer", env=env)
        assert first.returncode == 0, first.stderr
        users_file = tmp_path / "users.json"
        before = users_file.read_bytes()

        again = cli("users", "add", "ana", "--role", "admin", env=env)
        with_password = cli(
            "users",
            "add",
            "ana",
            "--role",
            "admin",
            "--password",
            env=env,
            stdin="new-password\nnew-password\n",
        )

        for result in (again, with_password):
            assert_one_line_refusal(result, "ana", "exists", "viewer")
            assert "pf_" not in result.stdout
        assert users_file.read_bytes() == before
        assert json.loads(before)["users"]["ana"]["role"] == "viewer"

    def test_a_name_that_exists_with_its_role_gets_another_token(self, tmp_path: Path) -> None:
        env = embedded_env(tmp_path)
        first = cli("users", "add", "ana", "--role", "viewer", env=env)
        again = cli("users", "add", "ana", "--role", "viewer", env=env)
        assert first.returncode == again.returncode == 0, again.stderr
        tokens = [result.stdout.strip().splitlines()[-1] for result in (first, again)]
        assert tokens[0] != tokens[1]
        users = json.loads((tmp_path / "users.json").read_bytes())["users"]
        assert users["ana"]["role"] == "viewer" and len(users["ana"]["tokens"]) == 2

    def test_a_short_secret_key_the_embedded_mode_takes_does_not_stop_it(
        self, tmp_path: Path
    ) -> None:
        env = embedded_env(tmp_path, PARTSFLOW_SECRET_KEY="short")
        result = cli("users", "add", "ana", "--role", "viewer", env=env)
        assert result.returncode == 0, result.stderr
        assert result.stdout.strip().splitlines()[-1].startswith("pf_")


class TestUsersSignOutAndRemove:
    def test_a_user_signed_out_everywhere_keeps_its_tokens_and_a_removed_one_is_gone(
        self, tmp_path: Path
    ) -> None:
        env = embedded_env(tmp_path)
        token = cli("users", "add", "ana", "--role", "viewer", env=env).stdout.split()[-1]
        store = UserStore(tmp_path / "users.json")
        signed_out = cli("users", "sign-out", "ana", env=env)
        assert signed_out.returncode == 0, signed_out.stderr
        ana = store.get("ana")
        assert ana is not None and ana.sessions_from > 0
        assert store.by_token(token) == ana
        removed = cli("users", "remove", "ana", env=env)
        assert removed.returncode == 0, removed.stderr
        assert store.get("ana") is None and store.by_token(token) is None

    @pytest.mark.parametrize("command", ["sign-out", "remove"])
    def test_no_such_user_is_said_in_one_line(self, tmp_path: Path, command: str) -> None:
        env = embedded_env(tmp_path)
        cli("users", "add", "ana", "--role", "viewer", env=env)
        before = (tmp_path / "users.json").read_bytes()
        assert_one_line_refusal(cli("users", command, "bob", env=env), "no user bob")
        assert (tmp_path / "users.json").read_bytes() == before


class TestPorts:
    @pytest.mark.parametrize(
        "args",
        [
            ("run", "--port", "70000"),
            ("run", "--port", "-1"),
            ("run", "--port", "0"),
            ("stack", "--port", "0"),
            ("stack", "--web-port", "65535"),
            ("worker", "inventory", "--port", "70000"),
            ("web", "inventory", "--bind", "127.0.0.1:70000"),
        ],
        ids=" ".join,
    )
    def test_a_port_out_of_range_is_a_usage_error(self, tmp_path: Path, args) -> None:
        result = cli(*args, env=embedded_env(tmp_path))
        assert result.returncode == 2
        assert result.stderr.startswith("Usage: ")
        [error] = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
        assert "port" in error
        assert "Traceback" not in result.stderr
        assert not (tmp_path / "secret_key").exists()

    def test_a_port_in_use_stops_start_up_before_demo_users_are_made(self, tmp_path: Path) -> None:
        with socket.socket() as taken:
            taken.bind(("127.0.0.1", 0))
            taken.listen()
            port = taken.getsockname()[1]
            result = cli("run", "--demo", "--port", str(port), env=embedded_env(tmp_path))
        assert_one_line_refusal(result, f"127.0.0.1:{port}", "--port")
        # The demo users' one-time passwords were not spent on a start that failed.
        assert not (tmp_path / "users.json").exists() or not json.loads(
            (tmp_path / "users.json").read_text()
        ).get("users")


class TestStartUpWithBadSettings:
    def test_a_data_dir_that_cannot_be_made(self, tmp_path: Path) -> None:
        (tmp_path / "a-file").write_text("")
        result = cli("run", env=embedded_env(tmp_path / "a-file" / "var"))
        assert_one_line_refusal(result, "PARTSFLOW_DATA_DIR", "cannot be used")

    def test_a_data_dir_that_is_a_file(self, tmp_path: Path) -> None:
        (tmp_path / "var").write_text("")
        result = cli("run", env=embedded_env(tmp_path / "var"))
        assert_one_line_refusal(result, "PARTSFLOW_DATA_DIR", "is a file")

    def test_a_database_out_of_reach(self, tmp_path: Path) -> None:
        env = embedded_env(tmp_path, PARTSFLOW_INVENTORY_DB_URL=DATABASE_OUT_OF_REACH)
        result = cli("run", env=env)
        assert_one_line_refusal(result, "PARTSFLOW_INVENTORY_DB_URL", "cannot open")

    def test_a_database_url_that_is_not_one(self, tmp_path: Path) -> None:
        env = embedded_env(tmp_path, PARTSFLOW_INVENTORY_DB_URL="postgresql://db:port/x")
        result = cli("run", env=env)
        assert_one_line_refusal(result, "PARTSFLOW_INVENTORY_DB_URL")
