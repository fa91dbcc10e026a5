"""Driving the pages over HTTP as a browser would, without one: a cookie jar, the
CSRF token read from the form, and the text of an element found by its id."""

from __future__ import annotations

import re
from dataclasses import dataclass
from html import unescape
from html.parser import HTMLParser
from typing import Any

from werkzeug.test import Client, TestResponse

CSRF_FIELD = re.compile(
    r'name="csrf_token" type="hidden" value="([^"]+)"|'
    r'type="hidden" name="csrf_token" value="([^"]+)"'
)


@dataclass
class Page:
    status: int
    html: str
    location: str | None
    response: TestResponse

    def text(self, element_id: str) -> str:
        """The visible text inside the element with this id ('' when there is none)."""
        return element_text(self.html, element_id)

    def value(self, name: str) -> str | None:
        """What an input (by name or id), a textarea or a select named ``name`` holds."""
        return field_value(self.html, name)

    @property
    def body_text(self) -> str:
        return " ".join(unescape(re.sub(r"<[^>]+>", " ", self.html)).split())


class PageClient:
    def __init__(self, wsgi: Any) -> None:
        self.client = Client(wsgi)

    def get(self, path: str, **params: Any) -> Page:
        return _page(self.client.get(path, query_string=params or None))

    def post(self, path: str, data: dict[str, Any]) -> Page:
        return _page(self.client.post(path, data=data))

    def submit(self, form_page: str, data: dict[str, Any], action: str | None = None) -> Page:
        """Open the page holding the form, then send it with the page's CSRF token."""
        token = csrf_token(self.get(form_page).html)
        return self.post(action or form_page.split("?")[0], {"csrf_token": token, **data})

    def sign_in(self, name: str, password: str, next_path: str = "/") -> Page:
        return self.submit(
            "/login", {"name": name, "password": password}, action=f"/login?next={next_path}"
        )

    def cookie(self, name: str) -> Any:
        return self.client.get_cookie(name)


def _page(response: TestResponse) -> Page:
    html = response.get_data(as_text=True)
    response.close()
    return Page(response.status_code, html, response.headers.get("Location"), response)


def csrf_token(html: str) -> str:
    match = CSRF_FIELD.search(html)
    assert match, "the page has no CSRF token"
    return match.group(1) or match.group(2)


class _ById(HTMLParser):
    VOID = {"input", "br", "img", "meta", "link", "hr", "source", "col", "wbr"}

    def __init__(self, element_id: str) -> None:
        super().__init__()
        self.element_id = element_id
        self.depth = 0
        self.parts: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in self.VOID:
            return
        if self.depth:
            self.depth += 1
        elif dict(attrs).get("id") == self.element_id:
            self.depth = 1

    def handle_endtag(self, tag: str) -> None:
        if self.depth and tag not in self.VOID:
            self.depth -= 1

    def handle_data(self, data: str) -> None:
        if self.depth:
            self.parts.append(data)


def element_text(html: str, element_id: str) -> str:
    parser = _ById(element_id)
    parser.feed(html)
    return " ".join(" ".join(parser.parts).split())


class _Fields(HTMLParser):
    def __init__(self, name: str) -> None:
        super().__init__()
        self.name = name
        self.value: str | None = None
        self.in_textarea = False
        self.in_select = False
        self.option: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "input" and self.name in (a.get("name"), a.get("id")):
            if a.get("type") in ("checkbox", "radio") and "checked" not in a:
                return
            self.value = a.get("value") or ""
        elif tag == "textarea" and a.get("name") == self.name:
            self.in_textarea = True
            self.value = ""
        elif tag == "select" and a.get("name") == self.name:
            self.in_select = True
        elif tag == "option" and self.in_select and "selected" in a:
            self.value = a.get("value") or ""

    def handle_endtag(self, tag: str) -> None:
        if tag == "textarea":
            self.in_textarea = False
        if tag == "select":
            self.in_select = False

    def handle_data(self, data: str) -> None:
        if self.in_textarea:
            self.value = (self.value or "") + data


def field_value(html: str, name: str) -> str | None:
    parser = _Fields(name)
    parser.feed(html)
    return None if parser.value is None else parser.value.strip()
