"""docker-compose.yml and .env.example, checked without a Docker engine: the file is
valid Compose, and everything it names exists in the project."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from services import bootstrap
from shared.config import load_settings
from tests.deploy.support import (
    COMPOSE_FILE,
    ENV_EXAMPLE,
    IMAGE,
    NGINX_CONF,
    ROOT,
    SETTING_NAMES,
    MissingVariable,
    bind_port,
    check_partsflow_command,
    interpolate,
    load_yaml,
    read_env_file,
    split_command,
    variables_used,
)

SCHEMA = json.loads((Path(__file__).with_name("compose_spec.json")).read_text())
# The schema names draft 2019-09 by an address of its own spelling ("http://...draft/
# 2019-09/schema#"), which jsonschema does not look up; that draft is what it means.
VALIDATOR = jsonschema.Draft201909Validator(SCHEMA)
# What an operator puts in .env for the required values.
FILLED_IN = {
    "PARTSFLOW_SECRET_KEY": "k" * 48,
    "POSTGRES_PASSWORD": "pg-password",
    "RABBITMQ_PASSWORD": "mq-password",
}


@pytest.fixture(scope="module")
def raw() -> dict[str, Any]:
    return load_yaml(COMPOSE_FILE)


@pytest.fixture(scope="module")
def compose(raw: dict[str, Any]) -> dict[str, Any]:
    """The file as Compose sees it with .env made from .env.example."""
    return interpolate(raw, {**read_env_file(ENV_EXAMPLE), **FILLED_IN})


def partsflow_services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {
        name: service
        for name, service in compose["services"].items()
        if service["image"].split(":")[0] == IMAGE
    }


class TestTheComposeFile:
    def test_it_follows_the_compose_specification(self, raw, compose) -> None:
        for document in (raw, compose):
            errors = [
                f"{'/'.join(map(str, e.absolute_path))}: {e.message}"
                for e in VALIDATOR.iter_errors(document)
            ]
            assert errors == []

    def test_the_schema_catches_a_mistake(self, raw) -> None:
        broken = json.loads(json.dumps(raw))
        broken["services"]["inventory-web"]["depends_on"]["migrate"] = {"condition": "done"}
        assert not VALIDATOR.is_valid(broken)

    def test_it_has_every_role_of_the_production_shape(self, compose) -> None:
        expected = {"rabbitmq", "postgres", "redis", "migrate", "gateway"}
        for service in bootstrap.SERVICES:
            expected |= {f"{service}-web", f"{service}-worker"}
        assert set(compose["services"]) == expected

    def test_one_image_built_from_the_dockerfile_serves_every_role(self, compose) -> None:
        ours = partsflow_services(compose)
        assert len(ours) == 7
        assert {service["image"] for service in ours.values()} == {f"{IMAGE}:latest"}
        for service in ours.values():
            build = service["build"]
            assert (ROOT / build["context"] / build["dockerfile"]).is_file()

    def test_every_command_is_a_real_partsflow_command(self, compose) -> None:
        for name, service in partsflow_services(compose).items():
            argv = split_command(service["command"])
            check_partsflow_command(argv)
            if name == "migrate":
                assert argv == ["partsflow", "db", "upgrade"]
            else:
                service_name, role = name.rsplit("-", 1)
                assert argv[1:3] == [role, service_name]

    def test_dependencies_wait_for_health_and_migrations(self, compose) -> None:
        services = compose["services"]
        for name, service in services.items():
            for dependency, rule in service.get("depends_on", {}).items():
                assert dependency in services, (name, dependency)
                if rule["condition"] == "service_healthy":
                    assert "healthcheck" in services[dependency], (name, dependency)
        for name, service in partsflow_services(compose).items():
            if name != "migrate":
                assert service["depends_on"]["migrate"] == {
                    "condition": "service_completed_successfully"
                }

    def test_workers_get_time_to_finish_the_messages_in_hand(self, compose) -> None:
        for service in bootstrap.SERVICES:
            grace = compose["services"][f"{service}-worker"]["stop_grace_period"]
            # The consumer waits up to 30 s for its handlers after SIGTERM.
            assert grace.endswith("s") and int(grace[:-1]) > 30

    def test_the_servers_keep_their_data_in_volumes(self, compose) -> None:
        declared = set(compose["volumes"])
        for service in compose["services"].values():
            for mount in service.get("volumes", []):
                source = mount.split(":", 1)[0]
                if source.startswith("./"):
                    assert (ROOT / source).is_file(), mount
                else:
                    assert source in declared, mount
        assert any(
            m.endswith(":/var/lib/rabbitmq") for m in compose["services"]["rabbitmq"]["volumes"]
        )
        assert any(
            m.endswith(":/var/lib/postgresql/data")
            for m in compose["services"]["postgres"]["volumes"]
        )

    def test_rabbitmq_runs_with_its_management_ui(self, compose) -> None:
        rabbitmq = compose["services"]["rabbitmq"]
        assert rabbitmq["image"].endswith("-management")
        assert any(port.endswith(":15672") for port in rabbitmq["ports"])

    def test_postgres_creates_a_database_per_service_at_first_start(self, compose) -> None:
        postgres = compose["services"]["postgres"]
        [init] = [m for m in postgres["volumes"] if "docker-entrypoint-initdb.d" in m]
        script = (ROOT / init.split(":")[0]).read_text()
        created = set(re.findall(r"CREATE DATABASE (\w+)", script))
        created.add(postgres["environment"]["POSTGRES_DB"])
        databases = {
            url.rsplit("/", 1)[1]
            for name, url in compose["x-partsflow"]["environment"].items()
            if name.endswith("_DB_URL")
        }
        assert created == databases == set(bootstrap.SERVICES)
        # The health check passes only once the last database exists.
        assert "-d tracking" in " ".join(postgres["healthcheck"]["test"])


class TestProbes:
    def test_every_web_server_is_checked_on_its_own_readiness_page(self, compose, served) -> None:
        for service in bootstrap.SERVICES:
            web = compose["services"][f"{service}-web"]
            port = bind_port(split_command(web["command"]))
            test = " ".join(web["healthcheck"]["test"])
            [url] = re.findall(r"http://[^'\" ]+", test)
            assert url == f"http://127.0.0.1:{port}/{service}/readyz"
            assert served(f"/{service}/readyz") == 200

    def test_the_servers_and_the_gateway_have_health_checks(self, compose, served) -> None:
        for name in ("rabbitmq", "postgres", "gateway"):
            assert compose["services"][name]["healthcheck"]["test"], name
        gateway_check = " ".join(compose["services"]["gateway"]["healthcheck"]["test"])
        [url] = re.findall(r"http://\S+", gateway_check)
        assert served(url.split(":8080", 1)[1]) == 200


class TestGateway:
    def test_nginx_gets_every_value_its_template_needs(self, compose) -> None:
        gateway = compose["services"]["gateway"]
        placeholders = set(re.findall(r"\$\{(\w+)\}", NGINX_CONF.read_text()))
        assert placeholders == set(gateway["environment"])
        assert any(
            m.endswith(":/etc/nginx/templates/default.conf.template:ro")
            and (ROOT / m.split(":")[0]).resolve() == NGINX_CONF
            for m in gateway["volumes"]
        )

    def test_it_sends_each_prefix_to_that_services_web_server(self, compose) -> None:
        environment = compose["services"]["gateway"]["environment"]
        for service in bootstrap.SERVICES:
            host, port = environment[f"{service.upper()}_UPSTREAM"].split(":")
            assert host == f"{service}-web"
            assert int(port) == bind_port(split_command(compose["services"][host]["command"]))

    def test_it_is_the_one_published_port_of_the_partsflow_services(self, compose) -> None:
        assert compose["services"]["gateway"]["ports"] == ["8080:8080"]
        assert all("ports" not in s for s in partsflow_services(compose).values())


class TestSettings:
    def test_every_partsflow_variable_is_a_setting(self, raw) -> None:
        names = set(raw["x-partsflow"]["environment"])
        assert {n for n in names if n.startswith("PARTSFLOW_")} <= SETTING_NAMES
        assert names <= SETTING_NAMES

    def test_the_environment_makes_valid_production_settings(self, compose) -> None:
        environment = {k: str(v) for k, v in compose["x-partsflow"]["environment"].items()}
        settings = load_settings(environ=environment)
        assert settings.broker_url.startswith("amqp://")
        assert settings.broker_url.split("@")[1] == "rabbitmq:5672//"
        for service in bootstrap.SERVICES:
            assert settings.db_url(service).startswith("postgresql://")
            assert "@postgres:5432/" in settings.db_url(service)

    def test_every_variable_the_file_uses_is_in_env_example(self) -> None:
        used = variables_used(COMPOSE_FILE.read_text())
        documented = read_env_file(ENV_EXAMPLE)
        assert set(used) == set(documented)

    def test_secrets_come_only_from_the_environment(self, raw) -> None:
        used = variables_used(COMPOSE_FILE.read_text())
        required = {name for name, op in used.items() if op == ":?"}
        assert required == set(FILLED_IN)
        assert all(read_env_file(ENV_EXAMPLE)[name] == "" for name in required)
        environment = raw["x-partsflow"]["environment"]
        assert environment["PARTSFLOW_SECRET_KEY"] == (
            "${PARTSFLOW_SECRET_KEY:?set PARTSFLOW_SECRET_KEY in .env}"
        )

    def test_compose_refuses_to_start_without_them(self, raw) -> None:
        with pytest.raises(MissingVariable, match="PARTSFLOW_SECRET_KEY"):
            interpolate(raw, read_env_file(ENV_EXAMPLE))
