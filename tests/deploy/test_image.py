"""deploy/docker/Dockerfile, read as Docker would read it: one slim image for every
role, running as a user that is not root, with no secret inside."""

from __future__ import annotations

import fnmatch
import json
import re

from click.testing import CliRunner

from services.cli import main as partsflow_cli
from tests.deploy.support import DOCKERFILE, ROOT, SETTING_NAMES

IGNORE_FILE = DOCKERFILE.with_name("Dockerfile.dockerignore")


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    logical, current = [], ""
    for line in DOCKERFILE.read_text().splitlines():
        if line.lstrip().startswith("#") and not current:
            continue
        current += line.rstrip("\\").strip() + " "
        if not line.endswith("\\"):
            if current.strip():
                keyword, _, rest = current.strip().partition(" ")
                logical.append((keyword.upper(), rest.strip()))
            current = ""
    return logical


def stages() -> list[list[tuple[str, str]]]:
    result: list[list[tuple[str, str]]] = []
    for keyword, rest in instructions():
        if keyword == "FROM":
            result.append([])
        result[-1].append((keyword, rest))
    return result


def build_context_keeps(path: str) -> bool:
    """Whether the .dockerignore beside the Dockerfile lets ``path`` into the context
    (later lines win, ``!`` re-includes)."""
    kept = True
    for line in IGNORE_FILE.read_text().splitlines():
        pattern = line.strip()
        if not pattern or pattern.startswith("#"):
            continue
        negate = pattern.startswith("!")
        pattern = pattern.lstrip("!").rstrip("/")
        if fnmatch.fnmatch(path, pattern) or fnmatch.fnmatch(path.split("/")[0], pattern):
            kept = negate
    return kept


class TestTheImage:
    def test_it_builds_in_one_stage_and_runs_from_a_slim_one(self) -> None:
        build, final = stages()
        assert build[0][1].endswith(" AS build")
        assert "slim" in build[0][1] and "slim" in final[0][1]
        assert ("RUN", "python -m venv /opt/partsflow && /opt/partsflow/bin/pip install .") in (
            build
        )
        assert ("COPY", "--from=build /opt/partsflow /opt/partsflow") in final

    def test_it_copies_only_what_exists_and_the_build_context_keeps(self) -> None:
        for keyword, rest in instructions():
            if keyword == "COPY" and not rest.startswith("--from"):
                *sources, _target = rest.split()
                for source in sources:
                    assert (ROOT / source).exists(), source
                    assert build_context_keeps(source), source
        assert not build_context_keeps(".venv")
        assert not build_context_keeps("var")

    def test_it_runs_as_a_numeric_user_that_is_not_root(self) -> None:
        _, final = stages()
        [user] = [rest for keyword, rest in final if keyword == "USER"]
        uid = user.split(":")[0]
        assert uid.isdigit() and int(uid) != 0
        useradd = next(rest for keyword, rest in final if "useradd" in rest)
        assert f"--uid {uid}" in useradd

    def test_no_secret_is_baked_in(self) -> None:
        for keyword, rest in instructions():
            if keyword in ("ENV", "ARG", "LABEL"):
                assert not re.search(r"SECRET|PASSWORD|TOKEN|_URL", rest, re.I), rest
        env = " ".join(rest for keyword, rest in instructions() if keyword == "ENV")
        for name in re.findall(r"(PARTSFLOW_\w+)=", env):
            assert name in SETTING_NAMES

    def test_its_default_command_is_the_partsflow_command(self) -> None:
        _, final = stages()
        [cmd] = [rest for keyword, rest in final if keyword == "CMD"]
        assert json.loads(cmd) == ["partsflow", "--help"]
        assert CliRunner().invoke(partsflow_cli, ["--help"]).exit_code == 0
        # No ENTRYPOINT: a role's command (compose `command`, Kubernetes `args`) is the
        # whole command line.
        assert not any(keyword == "ENTRYPOINT" for keyword, _ in final)
