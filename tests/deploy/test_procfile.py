"""deploy/Procfile and `partsflow stack`'s plan: the same processes as the compose
stack, laid out on one machine behind one gateway."""

from __future__ import annotations

import shlex
import shutil
import subprocess
from pathlib import Path

import pytest

from services import bootstrap, stack
from shared.config import ConfigError
from tests.conftest import make_settings
from tests.deploy.support import (
    COMPOSE_FILE,
    check_partsflow_command,
    load_yaml,
    split_command,
    without_listen_address,
)

POSTGRES = "postgresql://postgres@127.0.0.1:5432/"
AMQP = "amqp://guest:guest@127.0.0.1:5672//"


def stack_settings(tmp_path: Path, **overrides: str):
    values = {f"{s}_db_url": f"{POSTGRES}pf_plan_{s}" for s in bootstrap.SERVICES}
    values["broker_url"] = AMQP
    values.update(overrides)
    return make_settings(tmp_path, **values)


class TestProcfile:
    def test_it_runs_the_compose_stacks_processes_with_the_same_commands(self) -> None:
        procfile = stack.read_procfile()
        services = load_yaml(COMPOSE_FILE)["services"]
        assert set(procfile) == {
            name for name, service in services.items() if "build" in service
        } - {"migrate"}
        for name, command in procfile.items():
            compose_argv = split_command(services[name]["command"])
            assert without_listen_address(shlex.split(command)) == without_listen_address(
                compose_argv
            )

    def test_the_step_before_it_is_the_compose_migration(self) -> None:
        migrate = load_yaml(COMPOSE_FILE)["services"]["migrate"]["command"]
        assert migrate == stack.RELEASE_COMMAND

    def test_every_line_is_a_real_partsflow_command(self) -> None:
        for command in stack.read_procfile().values():
            check_partsflow_command(shlex.split(command.replace("$PORT", "8001")))

    def test_web_servers_listen_on_the_port_they_are_given(self) -> None:
        for name, command in stack.read_procfile().items():
            if name.endswith("-web"):
                assert "--bind 127.0.0.1:$PORT" in command


class TestPlan:
    def test_each_web_server_gets_its_own_port_and_the_gateway_routes_to_it(self, tmp_path) -> None:
        plan = stack.plan_stack(
            stack_settings(tmp_path), environ={}, port=9080, web_port=9001, gateway="python"
        )
        assert dict(plan.web_ports) == {"inventory": 9001, "shipments": 9002, "tracking": 9003}
        for service, port in plan.web_ports.items():
            assert plan.process(f"{service}-web").env["PORT"] == str(port)
        gateway = shlex.split(plan.process("gateway").command)
        assert gateway[1:3] == ["-m", "services.gateway"]
        assert "--bind" in gateway and "127.0.0.1:9080" in gateway
        assert {w for w in gateway if w.startswith("--upstream=")} == {
            "--upstream=inventory=127.0.0.1:9001",
            "--upstream=shipments=127.0.0.1:9002",
            "--upstream=tracking=127.0.0.1:9003",
        }
        assert "--default=tracking" in gateway
        assert plan.gateway_url == "http://127.0.0.1:9080"

    def test_every_process_gets_the_same_settings(self, tmp_path) -> None:
        settings = stack_settings(tmp_path)
        plan = stack.plan_stack(
            settings, environ={"PARTSFLOW_LOG_LEVEL": "DEBUG"}, web_port=0, gateway="python"
        )
        assert len({p.env["PORT"] for p in plan.processes if "PORT" in p.env}) == 3
        for process in plan.processes:
            assert process.env["PARTSFLOW_SECRET_KEY"] == settings.secret_key
            assert process.env["PARTSFLOW_BROKER_URL"] == AMQP
            assert process.env["PARTSFLOW_BUS_PREFIX"] == settings.bus_prefix
            assert process.env["PARTSFLOW_LOG_LEVEL"] == "DEBUG"
            for service in bootstrap.SERVICES:
                key = f"PARTSFLOW_{service.upper()}_DB_URL"
                assert process.env[key] == settings.db_url(service)

    def test_it_refuses_the_in_process_bus_and_sqlite(self, tmp_path) -> None:
        with pytest.raises(stack.StackError, match="RabbitMQ"):
            stack.plan_stack(stack_settings(tmp_path, broker_url="memory://"), environ={})
        sqlite = stack_settings(tmp_path, shipments_db_url=f"sqlite:///{tmp_path}/s.db")
        with pytest.raises(stack.StackError, match="PARTSFLOW_SHIPMENTS_DB_URL"):
            stack.plan_stack(sqlite, environ={})

    def test_nginx_must_be_there_when_asked_for(self, tmp_path, monkeypatch) -> None:
        monkeypatch.setenv("PATH", str(tmp_path))
        with pytest.raises(stack.StackError, match="nginx is not installed"):
            stack.plan_stack(stack_settings(tmp_path), environ={}, gateway="nginx")
        plan = stack.plan_stack(stack_settings(tmp_path), environ={}, gateway="auto")
        assert plan.gateway_kind == "python"


class TestLocalSettings:
    def test_it_defaults_to_the_local_servers_and_keeps_a_secret_key(self, tmp_path) -> None:
        environ = {"PARTSFLOW_DATA_DIR": str(tmp_path)}
        first = stack.local_settings(environ)
        assert first.broker_url == stack.LOCAL_BROKER_URL
        assert first.db_url("inventory") == f"{POSTGRES}partsflow_inventory"
        assert len(first.secret_key) >= 32
        assert stack.local_settings(environ).secret_key == first.secret_key

    def test_the_environment_wins(self, tmp_path) -> None:
        environ = {
            "PARTSFLOW_DATA_DIR": str(tmp_path),
            "PARTSFLOW_SECRET_KEY": "s" * 40,
            "PARTSFLOW_TRACKING_DB_URL": f"{POSTGRES}elsewhere",
            "PARTSFLOW_BROKER_URL": "amqp://user:pw@broker:5672//",
        }
        settings = stack.local_settings(environ)
        assert settings.secret_key == "s" * 40
        assert settings.db_url("tracking") == f"{POSTGRES}elsewhere"
        assert settings.db_url("shipments") == f"{POSTGRES}partsflow_shipments"
        assert settings.broker_url == "amqp://user:pw@broker:5672//"
        assert not (tmp_path / "secret_key").exists()

    def test_a_short_secret_key_stops_it_at_once(self, tmp_path) -> None:
        with pytest.raises(ConfigError, match="at least 32"):
            stack.local_settings({"PARTSFLOW_DATA_DIR": str(tmp_path), "PARTSFLOW_SECRET_KEY": "x"})


class TestNginxConfig:
    UPSTREAMS = {"inventory": "127.0.0.1:9001", "shipments": "127.0.0.1:9002"}

    def test_every_placeholder_is_filled_in(self) -> None:
        upstreams = {**self.UPSTREAMS, "tracking": "127.0.0.1:9003"}
        conf = stack.render_gateway_conf("127.0.0.1:9080", upstreams)
        assert "${" not in conf
        assert "server 127.0.0.1:9003;" in conf
        assert "listen 127.0.0.1:9080;" in conf
        # nginx's own variables are left alone.
        assert "$http_host" in conf and "proxy_pass http://$1;" in conf

    @pytest.mark.skipif(not shutil.which("nginx"), reason="nginx is not installed")
    def test_nginx_accepts_the_configuration(self, tmp_path) -> None:
        upstreams = {**self.UPSTREAMS, "tracking": "127.0.0.1:9003"}
        config = stack.write_nginx_config("127.0.0.1:9080", upstreams, tmp_path)
        checked = subprocess.run(
            ["nginx", "-t", "-p", str(tmp_path), "-c", str(config), "-e", "stderr"],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        assert checked.returncode == 0, checked.stderr
