"""What protects the pages and the process: CSRF on every form, the session
cookie's flags, security headers, and no start without a proper secret key."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from services import bootstrap
from shared.config import MIN_SECRET_KEY_LENGTH, ConfigError, load_settings
from tests.processes import ROOT, environment
from tests.security.conftest import System, csrf_token, is_api, open_system, sign_in


def session_cookie_header(response) -> str:
    return next(
        value
        for value in response.headers.getlist("Set-Cookie")
        if value.startswith("partsflow_session=")
    )


def cookie_flags(header: str) -> dict[str, str]:
    flags = {}
    for part in header.split(";")[1:]:
        name, _, value = part.strip().partition("=")
        flags[name.lower()] = value
    return flags


class TestCsrf:
    def test_every_page_form_refuses_a_post_without_the_token(self, system: System) -> None:
        client = system.client()
        assert sign_in(client, "sec-admin").status_code == 302
        forms = [r for r in system.routes() if not is_api(r) and r.method == "POST"]
        assert any(r.rule == "/login" for r in forms)
        before = system.announced()
        wrong = [
            f"{route}: {status}"
            for route in forms
            if (status := client.post(route.path, data={"note": "x"}).status_code) != 400
        ]
        assert wrong == []
        assert system.announced() == before
        assert client.get("/inventory/stock").status_code == 200, "still signed in"

    def test_a_token_of_another_session_is_refused(self, system: System) -> None:
        stranger = system.client()
        assert sign_in(stranger, "sec-viewer").status_code == 302
        foreign = csrf_token(stranger.get("/login").get_data(as_text=True))
        client = system.client()
        assert sign_in(client, "sec-admin").status_code == 302
        response = client.post(
            "/inventory/warehouses",
            data={
                "csrf_token": foreign,
                "code": "XXX",
                "name": "Forged",
                "region": "nowhere",
                "kind": "depot",
            },
        )
        assert response.status_code == 400
        assert system.service("inventory").list_warehouses() == []

    def test_signing_in_needs_the_token(self, system: System) -> None:
        response = system.client().post(
            "/login", data={"name": "sec-admin", "password": "correct-horse-battery"}
        )
        assert response.status_code == 400
        assert "partsflow_session=" not in " ".join(response.headers.getlist("Set-Cookie"))


class TestSessionCookie:
    def test_http_only_lax_and_not_secure_over_plain_http(self, system: System) -> None:
        flags = cookie_flags(session_cookie_header(sign_in(system.client(), "sec-admin")))
        assert "httponly" in flags
        assert flags["samesite"].lower() == "lax"
        assert "secure" not in flags

    def test_secure_when_the_site_is_served_over_https(self, tmp_path: Path) -> None:
        system = open_system(tmp_path, secure_cookies=True)
        try:
            client = system.client()
            form = client.get("/login", base_url="https://localhost")
            token = csrf_token(form.get_data(as_text=True))
            response = client.post(
                "/login",
                base_url="https://localhost",
                data={
                    "csrf_token": token,
                    "name": "sec-admin",
                    "password": "correct-horse-battery",
                },
                headers={"Referer": "https://localhost/login"},
            )
            assert response.status_code == 302
            flags = cookie_flags(session_cookie_header(response))
            assert "secure" in flags
            assert "httponly" in flags
            assert flags["samesite"].lower() == "lax"
        finally:
            system.embedded.close()

    def test_secure_cookies_are_switched_on_from_the_environment(self) -> None:
        settings = load_settings(
            environ={"PARTSFLOW_SECURE_COOKIES": "1", "PARTSFLOW_SECRET_KEY": "k" * 40}
        )
        assert settings.secure_cookies is True


class TestHeaders:
    @pytest.mark.parametrize(
        "path",
        ["/login", "/inventory/stock", "/inventory/api/v1/stock", "/tracking/api/openapi.json"],
    )
    def test_pages_and_api_answers_carry_the_security_headers(
        self, system: System, path: str
    ) -> None:
        client = system.client()
        sign_in(client, "sec-admin")
        headers = client.get(path).headers
        csp = headers["Content-Security-Policy"]
        assert "default-src 'self'" in csp
        assert "frame-ancestors 'none'" in csp
        assert "script-src 'self'" in csp
        assert headers["X-Content-Type-Options"] == "nosniff"
        assert headers["X-Frame-Options"] == "DENY"


class TestSecretKey:
    @pytest.mark.parametrize("secret", ["", "s" * (MIN_SECRET_KEY_LENGTH - 1)])
    def test_no_service_app_starts_without_a_proper_secret(
        self, tmp_path: Path, secret: str
    ) -> None:
        config = {"data_dir": str(tmp_path), "secret_key": secret}
        for name, module in bootstrap.SERVICES.items():
            with pytest.raises(ConfigError, match="PARTSFLOW_SECRET_KEY"):
                module.create_app(config)
            assert not (tmp_path / f"{name}.db").exists()

    def test_a_long_enough_secret_is_taken(self, tmp_path: Path) -> None:
        settings = load_settings(
            {"data_dir": str(tmp_path), "secret_key": "s" * MIN_SECRET_KEY_LENGTH}, environ={}
        )
        assert settings.secret_key == "s" * MIN_SECRET_KEY_LENGTH

    @pytest.mark.parametrize("secret", [None, "too-short"])
    def test_the_web_command_refuses_to_start(self, tmp_path: Path, secret: str | None) -> None:
        settings = load_settings({"data_dir": str(tmp_path)}, environ={}, embedded=True)
        env = environment(settings)
        env.pop("PARTSFLOW_SECRET_KEY")
        if secret is not None:
            env["PARTSFLOW_SECRET_KEY"] = secret
        result = subprocess.run(
            [sys.executable, "-m", "services.cli", "web", "inventory", "--bind", "127.0.0.1:0"],
            env=env,
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode != 0
        assert "PARTSFLOW_SECRET_KEY" in result.stderr + result.stdout
