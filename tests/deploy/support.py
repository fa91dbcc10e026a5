"""Reading the deployment files the way their tools do, and checking what they name
against the code: commands against the `partsflow` command line, variables against
the settings, probe paths against the apps."""

from __future__ import annotations

import re
import shlex
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import click
import yaml

from services.cli import main as partsflow_cli
from shared.config import _ENV_NAMES, SERVICES

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yml"
ENV_EXAMPLE = ROOT / ".env.example"
DOCKERFILE = ROOT / "deploy" / "docker" / "Dockerfile"
NGINX_CONF = ROOT / "deploy" / "docker" / "nginx.conf"
PROCFILE = ROOT / "deploy" / "Procfile"
K8S_DIR = ROOT / "deploy" / "k8s"
IMAGE = "partsflow"

SETTING_NAMES = frozenset(_ENV_NAMES) | {f"PARTSFLOW_{s.upper()}_DB_URL" for s in SERVICES}


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def load_yaml_documents(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


# -- Compose's variable interpolation ---------------------------------------------------

_VARIABLE = re.compile(
    r"\$(?:(?P<escaped>\$)|\{(?P<braced>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\}"
    r"|(?P<named>[A-Za-z_][A-Za-z0-9_]*))"
)


class MissingVariable(KeyError):
    pass


def interpolate(value: Any, env: Mapping[str, str]) -> Any:
    """Substitute ``$VAR``, ``${VAR}``, ``${VAR:-default}`` and ``${VAR:?error}`` as
    Docker Compose does, in every string of a parsed file; ``$$`` stands for ``$``."""
    if isinstance(value, dict):
        return {key: interpolate(item, env) for key, item in value.items()}
    if isinstance(value, list):
        return [interpolate(item, env) for item in value]
    if not isinstance(value, str):
        return value

    def substitute(match: re.Match[str]) -> str:
        if match["escaped"]:
            return "$"
        name = match["braced"] or match["named"]
        op, arg = match["op"], match["arg"]
        current = env.get(name)
        unset = current is None or (current == "" and op is not None and op.startswith(":"))
        if op in (":-", "-") and unset:
            return arg
        if op in (":?", "?") and unset:
            raise MissingVariable(f"{name}: {arg}")
        return current or ""

    return _VARIABLE.sub(substitute, value)


def variables_used(text: str) -> dict[str, str | None]:
    """Every variable a Compose file interpolates, with its operator (None, ``:-``,
    ``:?``...)."""
    found: dict[str, str | None] = {}
    for match in _VARIABLE.finditer(text):
        name = match["braced"] or match["named"]
        if name:
            found.setdefault(name, match["op"])
    return found


def read_env_file(path: Path) -> dict[str, str]:
    values = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            name, _, value = line.partition("=")
            values[name.strip()] = value.strip()
    return values


# -- the partsflow command line ---------------------------------------------------------


def check_partsflow_command(argv: list[str]) -> click.Command:
    """Parse ``argv`` exactly as ``partsflow`` would, without running it: the command
    must exist and its arguments and options must be valid. Returns the command."""
    assert argv[0] == "partsflow", argv
    command: click.Command = partsflow_cli
    words = list(argv[1:])
    path = ["partsflow"]
    while isinstance(command, click.Group):
        assert words, f"{shlex.join(argv)}: a subcommand is missing"
        name = words.pop(0)
        assert name in command.commands, f"{shlex.join(argv)}: no command {name!r}"
        command = command.commands[name]
        path.append(name)
    try:
        command.make_context(" ".join(path), words)
    except click.ClickException as error:
        raise AssertionError(f"{shlex.join(argv)}: {error.format_message()}") from None
    return command


def split_command(command: str | list[str]) -> list[str]:
    return shlex.split(command) if isinstance(command, str) else list(command)


def without_listen_address(argv: list[str]) -> list[str]:
    """The command with the value of ``--bind`` blanked and a worker's probe ``--port``
    left out: where a process listens is the one thing that differs between a container
    and a workstation."""
    words = list(argv)
    if "--bind" in words:
        words[words.index("--bind") + 1] = "<address>"
    if "--port" in words and words[0:2] == ["partsflow", "worker"]:
        at = words.index("--port")
        del words[at : at + 2]
    return words


def bind_port(argv: list[str]) -> int:
    return int(argv[argv.index("--bind") + 1].rsplit(":", 1)[1])


# -- Kubernetes -------------------------------------------------------------------------


def k8s_documents() -> list[dict[str, Any]]:
    kustomization = load_yaml(K8S_DIR / "kustomization.yaml")
    documents = []
    for name in kustomization["resources"]:
        documents += load_yaml_documents(K8S_DIR / name)
    return documents


def of_kind(documents: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {doc["metadata"]["name"]: doc for doc in documents if doc["kind"] == kind}


def pod_containers(deployment: dict[str, Any]) -> Iterator[dict[str, Any]]:
    spec = deployment["spec"]["template"]["spec"]
    yield from spec.get("initContainers", [])
    yield from spec["containers"]
