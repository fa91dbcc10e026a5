"""Signing in to the pages, and what protects them: the session cookie's flags, CSRF
on every form, security headers, and the API that still takes only tokens."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest

from shared.auth import UserStore
from shared.web import SESSION_HOURS
from tests.browser.conftest import PASSWORD, Site
from tests.browser.pageclient import PageClient, csrf_token


class TestSignIn:
    def test_a_page_sends_a_stranger_to_the_login_form(self, site: Site) -> None:
        reply = site.client().get("/inventory/stock", part_number="XRT-2000")
        assert reply.status == 302
        assert reply.location == "/login?next=/inventory/stock%3Fpart_number%3DXRT-2000"

    def test_signing_in_leads_back_to_the_page_asked_for(self, site: Site) -> None:
        client = site.client()
        reply = client.sign_in("dispatcher", PASSWORD, next_path="/inventory/stock")
        assert reply.status == 302
        assert reply.location == "/inventory/stock"
        stock = client.get("/inventory/stock")
        assert stock.status == 200
        assert "dispatcher" in stock.text("main") or "dispatcher" in stock.body_text

    def test_one_sign_in_opens_every_prefix(self, site: Site) -> None:
        client = site.client("dispatcher")
        for path in ("/", "/inventory/stock", "/shipments/", "/tracking/control-tower"):
            assert client.get(path).status == 200, path

    @pytest.mark.parametrize(("sent", "shown"), [("+05:30", "+05:30"), ("+99:00", "+00:00")])
    def test_pages_start_in_the_zone_the_browser_sent(
        self, site: Site, sent: str, shown: str
    ) -> None:
        client = site.client()
        reply = client.submit(
            "/login",
            {"name": "dispatcher", "password": PASSWORD, "utc_offset": sent},
            action="/login?next=/",
        )
        assert reply.status == 302
        assert client.get("/inventory/receipts/new").value("utc_offset") == shown

    def test_wrong_password_is_refused_and_the_name_kept(self, site: Site) -> None:
        client = site.client()
        reply = client.sign_in("dispatcher", "not-the-password")
        assert reply.status == 401
        assert "Wrong name or password" in reply.body_text
        assert reply.value("name") == "dispatcher"
        assert reply.value("password") == ""
        assert client.get("/inventory/stock").status == 302

    def test_guessing_passwords_makes_the_name_wait(self, site: Site) -> None:
        client = site.client()
        for _ in range(10):
            assert client.sign_in("dispatcher", "a wrong guess").status == 401
        refused = client.sign_in("dispatcher", PASSWORD)
        assert refused.status == 429
        assert 1 <= int(refused.response.headers["Retry-After"]) <= 60
        assert "Too many sign-ins for this name" in refused.body_text
        assert client.get("/inventory/stock").status == 302
        # Another name is not held up by them.
        assert site.client().sign_in("auditor", PASSWORD).status == 302

    def test_guesses_sent_at_once_are_each_counted(self, site: Site) -> None:
        """Twenty guesses at the same moment, each from a browser of its own: no more
        than ten are checked, however the password checks overlap."""
        guessers = [site.client() for _ in range(20)]
        tokens = [csrf_token(g.get("/login").html) for g in guessers]

        def guess(n: int) -> int:
            form = {"csrf_token": tokens[n], "name": "dispatcher", "password": f"guess {n}"}
            return guessers[n].post("/login?next=/", form).status

        with ThreadPoolExecutor(max_workers=20) as pool:
            statuses = sorted(pool.map(guess, range(20)))
        assert statuses == [401] * 10 + [429] * 10

    @pytest.mark.parametrize(
        "target",
        ["//evil.example/x", "https://evil.example/", "/\\evil", "/%0d%0aSet-Cookie:x=1"],
    )
    def test_sign_in_never_leads_to_another_site(self, site: Site, target: str) -> None:
        reply = site.client().sign_in("dispatcher", PASSWORD, next_path=target)
        assert reply.status == 302
        assert reply.location == "/"
        # Nor does choosing a time zone, signed in.
        client = site.client("dispatcher")
        reply = client.submit(
            "/", {"utc_offset": "+08:00"}, action=f"/preferences/time-zone?next={target}"
        )
        assert reply.status == 302
        assert reply.location == "/"

    def test_signing_out_ends_the_session(self, site: Site) -> None:
        client = site.client("dispatcher")
        reply = client.submit("/logout", {})
        assert reply.status == 302
        assert client.get("/inventory/stock").status == 302

    def test_a_new_password_or_a_sign_out_everywhere_ends_every_session(self, site: Site) -> None:
        """A cookie copied from a signed-in browser opens nothing once the user has a
        new password, or has been signed out everywhere."""
        users = UserStore(site.system.settings.users_path)
        for end in (
            lambda: users.add("dispatcher", "logistics", "another password"),
            lambda: users.end_sessions("dispatcher"),
        ):
            phone, desk = site.client(), site.client()
            password = site.passwords["dispatcher"]
            assert phone.sign_in("dispatcher", password).status == 302
            assert desk.sign_in("dispatcher", password).status == 302
            end()
            for browser in (phone, desk):
                assert browser.get("/inventory/stock").status == 302
            site.passwords["dispatcher"] = "another password"
            # Signing in again opens the pages again.
            assert desk.sign_in("dispatcher", "another password").status == 302
            assert desk.get("/inventory/stock").status == 200

    def test_a_session_lasts_a_working_day_from_its_sign_in(self, site: Site) -> None:
        """However busy: a copy of its cookie is no key for longer."""
        client = site.client("dispatcher")
        app = site.system.apps["inventory"]
        cookie = client.cookie(app.config["SESSION_COOKIE_NAME"])
        serializer = app.session_interface.get_signing_serializer(app)
        data = serializer.loads(cookie.value)
        assert client.get("/inventory/stock").status == 200
        data["began"] -= SESSION_HOURS * 3600 + 60
        client.client.set_cookie(
            app.config["SESSION_COOKIE_NAME"], serializer.dumps(data), path=cookie.path
        )
        assert client.get("/inventory/stock").status == 302

    def test_a_removed_user_is_signed_out_and_its_tokens_refused(self, site: Site) -> None:
        client = site.client("dispatcher")
        UserStore(site.system.settings.users_path).remove("dispatcher")
        assert client.get("/inventory/stock").status == 302
        assert client.sign_in("dispatcher", site.passwords["dispatcher"]).status == 401

    def test_a_role_without_the_permission_gets_a_403_page(self, site: Site) -> None:
        client = site.client("engineer")
        reply = client.get("/inventory/receipts/new")
        assert reply.status == 403
        assert "engineer" in reply.body_text
        assert client.get("/inventory/stock").status == 200


# What a browser says it takes when it follows a link.
BROWSER = {"Accept": "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"}


class TestErrorPages:
    @pytest.mark.parametrize(
        ("path", "status"),
        [
            ("/tracking/jobs/", 404),
            ("/inventory/no-such-page", 404),
            ("/nothing-here", 404),
            ("/inventory/warehouses/CDU/nothing", 404),
        ],
    )
    def test_a_wrong_address_gets_the_sites_page_with_its_links(
        self, site: Site, path: str, status: int
    ) -> None:
        reply = site.client("dispatcher").client.get(path, headers=BROWSER)
        assert reply.status_code == status
        assert reply.mimetype == "text/html"
        html = reply.get_data(as_text=True)
        assert "There is no page at this address" in html
        assert 'href="/"' in html and "partsflow.css" in html

    def test_a_method_a_page_does_not_take_gets_the_sites_page(self, site: Site) -> None:
        reply = site.client("dispatcher").client.put("/inventory/stock", headers=BROWSER)
        assert reply.status_code == 405
        assert reply.mimetype == "text/html"
        assert "only takes a form" in reply.get_data(as_text=True)
        assert "GET" in reply.headers["Allow"]


class TestSessionCookie:
    def test_cookie_is_http_only_lax_and_site_wide(self, site: Site) -> None:
        client = site.client()
        reply = client.sign_in("dispatcher", PASSWORD)
        header = next(
            value
            for name, value in reply.response.headers.items()
            if name == "Set-Cookie" and value.startswith("partsflow_session=")
        )
        flags = {part.strip().split("=")[0].lower(): part for part in header.split(";")}
        assert "httponly" in flags
        assert flags["samesite"].strip().lower() == "samesite=lax"
        assert flags["path"].strip() == "Path=/"

    def test_the_api_does_not_take_the_session_cookie(self, site: Site) -> None:
        client = site.client("dispatcher")
        for path in ("/inventory/api/v1/stock", "/shipments/api/v1/shipments"):
            reply = client.get(path)
            assert reply.status == 401, path
            assert reply.response.headers["Content-Type"] == "application/problem+json"


class TestCsrf:
    def test_a_form_post_without_the_token_is_refused(self, site: Site) -> None:
        client = site.client("dispatcher")
        reply = client.post(
            "/inventory/receipts/new",
            {"warehouse": "CDU", "part_number": "GEL-250", "quantity": "5"},
        )
        assert reply.status == 400
        assert "not accepted" in reply.body_text
        assert site.inventory.list_stock(part_number="GEL-250").items[0]["on_hand"] == 12

    def test_a_token_from_another_session_is_refused(self, site: Site) -> None:
        stranger = site.client("auditor")
        token = csrf_token(stranger.get("/inventory/stock").html)
        client = site.client("dispatcher")
        reply = client.post(
            "/inventory/receipts/new",
            {"csrf_token": token, "warehouse": "CDU", "part_number": "GEL-250", "quantity": "5"},
        )
        assert reply.status == 400
        assert site.inventory.list_stock(part_number="GEL-250").items[0]["on_hand"] == 12

    def test_signing_out_needs_the_token_too(self, site: Site) -> None:
        client = site.client("dispatcher")
        assert client.post("/logout", {}).status == 400
        assert client.get("/inventory/stock").status == 200

    def test_login_form_needs_the_token(self, site: Site) -> None:
        reply = PageClient(site.system.wsgi).post(
            "/login", {"name": "dispatcher", "password": PASSWORD}
        )
        assert reply.status == 400


class TestHeaders:
    def test_pages_carry_the_security_headers(self, site: Site) -> None:
        reply = site.client("dispatcher").get("/inventory/stock")
        headers = reply.response.headers
        csp = headers["Content-Security-Policy"]
        assert "default-src 'self'" in csp
        assert "script-src 'self'" in csp
        assert "style-src 'self'" in csp
        assert "frame-ancestors 'none'" in csp
        assert headers["X-Frame-Options"] == "DENY"
        assert headers["X-Content-Type-Options"] == "nosniff"
        assert headers["Referrer-Policy"] == "same-origin"
        assert headers["Cache-Control"] == "no-store"

    def test_the_stylesheet_and_script_are_served_from_the_site(self, site: Site) -> None:
        client = site.client()
        for prefix in ("inventory", "shipments", "tracking"):
            css = client.get(f"/{prefix}/assets/partsflow.css")
            assert css.status == 200
            assert css.response.mimetype == "text/css"
        script = client.get("/tracking/assets/refresh.js")
        assert script.status == 200
        assert "javascript" in script.response.mimetype
        # The icon every page names, so that no browser asks for a /favicon.ico.
        page = site.client("dispatcher").get("/inventory/stock")
        assert 'rel="icon" type="image/svg+xml" href="/inventory/assets/icon.svg"' in page.html
        icon = client.get("/inventory/assets/icon.svg")
        assert (icon.status, icon.response.mimetype) == (200, "image/svg+xml")
