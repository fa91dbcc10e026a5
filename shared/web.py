"""What every service's Flask app has in common.

Problem+json for every API error, token auth on the JSON API, Idempotency-Key on
POST, request and correlation ids in logs and events, body limits, security
headers, and the probes ``/healthz``, ``/readyz`` and ``/metrics``. Every app serves
its own prefix (``/inventory/...``), so the same app runs mounted in the embedded
process, under gunicorn, and behind the gateway with no path rewriting.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import math
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import wraps
from http import HTTPStatus
from typing import Any

import marshmallow as ma
import structlog
from apispec import BasePlugin
from flask import Flask, Request, Response, current_app, g, jsonify, render_template, request
from flask.sessions import SecureCookieSessionInterface, SessionMixin
from flask_limiter import ApplicationLimit, Limiter, RateLimitExceeded, RequestLimit
from flask_smorest import Api, Blueprint
from flask_smorest.pagination import PaginationMetadataSchema
from flask_smorest.utils import prepare_response
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from sqlalchemy import Row, delete, insert, select, update
from sqlalchemy.exc import IntegrityError
from webargs.flaskparser import FlaskParser, is_json_request
from werkzeug.exceptions import ClientDisconnected, HTTPException, MethodNotAllowed, NotFound
from werkzeug.http import parse_set_header

from shared import api_docs
from shared.auth import User, UserStore, parse_bearer
from shared.bus.connection import connect
from shared.bus.context import MessageContext, current_message
from shared.bus.envelope import usable_id
from shared.config import Settings, load_settings
from shared.db import Database, is_transient_db_error
from shared.errors import DomainError, InvalidInput
from shared.json_input import read_json
from shared.logs import configure_logging
from shared.metrics import OutboxCollector, QueueCollector

log = logging.getLogger("partsflow.web")

PROBLEM_JSON = "application/problem+json"
WRITE_METHODS = ("POST", "PUT", "PATCH", "DELETE")
IDEMPOTENCY_STALE_AFTER = timedelta(minutes=5)
# How long a replay waits for the first request of its key to be answered, and how
# often it looks; a first request slower than that leaves the replay a 409. Short: a
# waiting replay holds a web worker.
IDEMPOTENCY_WAIT_SECONDS = 1.0
IDEMPOTENCY_POLL_SECONDS = 0.05
MAX_PAGE = 1_000_000
KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
# How long a page session lasts from its sign-in, however busy: a working day.
SESSION_HOURS = 12
PROBLEM_BASE = "https://partsflow.example/problems/"
PROBES = ("healthz", "readyz", "metrics")
# Where a request's correlation id is left in the WSGI environ.
CORRELATION_ENVIRON_KEY = "partsflow.correlation_id"


class ProblemSchema(ma.Schema):
    """An error (RFC 9457), for the OpenAPI documents."""

    class Meta:
        # Problems add members of their own (``alternatives``, ``stock``...), as
        # RFC 9457 allows.
        unknown = ma.INCLUDE

    type = ma.fields.String()
    title = ma.fields.String()
    status = ma.fields.Integer()
    detail = ma.fields.String()
    errors = ma.fields.Dict(keys=ma.fields.String(), values=ma.fields.List(ma.fields.String()))


@dataclass
class ServiceContext:
    """Per-app state, kept at ``app.extensions["partsflow"]``."""

    name: str
    settings: Settings
    db: Database
    users: UserStore
    registry: CollectorRegistry
    readiness_checks: list[Callable[[], None]] = field(default_factory=list)
    extras: dict[str, Any] = field(default_factory=dict)


def service_context(app: Flask | None = None) -> ServiceContext:
    return (app or current_app).extensions["partsflow"]


def problem(
    status: int, title: str, detail: str | None = None, *, slug: str | None = None, **extra: Any
) -> Response:
    """``slug`` names the problem's type (after :data:`PROBLEM_BASE`); by default, the
    title's words."""
    body: dict[str, Any] = {
        "type": PROBLEM_BASE + (slug or title.lower().replace(" ", "-")),
        "title": title,
        "status": status,
    }
    if detail:
        body["detail"] = detail
    body.update(extra)
    response = jsonify(body)
    response.status_code = status
    response.mimetype = PROBLEM_JSON
    return response


class JsonBodyParser(FlaskParser):
    """webargs' parser, reading bodies with :func:`read_json`: a body nested too
    deeply or holding a lone surrogate is invalid JSON (422), not a failure."""

    def _raw_load_json(self, req: Request) -> Any:
        if not is_json_request(req):
            return ma.missing
        return read_json(req.get_data(cache=True))


class ApiBlueprint(Blueprint):
    """A flask-smorest Blueprint with the contract's pagination: ``page_size`` 100 by
    default, at most 1000; ``page`` at most :data:`MAX_PAGE`."""

    ARGUMENTS_PARSER = JsonBodyParser()
    DEFAULT_PAGINATION_PARAMETERS = {"page": 1, "page_size": 100, "max_page_size": 1000}

    @staticmethod
    def _make_pagination_metadata(page: int, page_size: int, item_count: int) -> Any:
        # The contract's header always says which page this is, even past the end.
        metadata = Blueprint._make_pagination_metadata(page, page_size, item_count)
        metadata["page"] = page
        return metadata

    def paginate(self, pager: Any = None, **options: Any) -> Callable[[Any], Any]:
        paginated = super().paginate(pager, **options)

        def decorator(view: Any) -> Any:
            wrapper = paginated(view)
            # flask-smorest bounds the page size only; far enough out, the offset no
            # longer fits the database's integers. Its schema parses and documents.
            schema = wrapper._apidoc["pagination"]["parameters"]["schema"]
            schema._declared_fields["page"].validators.append(ma.validate.Range(max=MAX_PAGE))
            return wrapper

        return decorator

    def arguments(self, schema: Any, *args: Any, **kwargs: Any) -> Callable[[Any], Any]:
        # webargs builds a schema from a class on every request; one instance serves all.
        if isinstance(schema, type):
            schema = schema()
        return super().arguments(schema, *args, **kwargs)


IDEMPOTENCY_KEY_PARAMETER = {
    "in": "header",
    "name": "Idempotency-Key",
    "required": False,
    "description": "Replaying a POST with the same key and body returns the first answer "
    "and changes nothing; the same key with another body is refused (422).",
    "schema": {"type": "string", "minLength": 1, "maxLength": 255},
}


class ProblemResponses(BasePlugin):
    """Documents, once for every operation of the JSON API, the problems the shared
    layer may answer with (no token, wrong role, unknown id, body too large or not
    JSON, invalid fields, too many writes, database unreachable), all as
    ``application/problem+json``."""

    def operation_helper(
        self, path: str | None = None, operations: dict | None = None, **kwargs: Any
    ) -> None:
        if not path or "/api/v1/" not in path:
            return
        for method, operation in (operations or {}).items():
            responses = operation.setdefault("responses", {})
            for status, response in responses.items():
                content = response.get("content") if isinstance(response, dict) else None
                is_error = str(status).isdigit() and int(status) >= 400
                if is_error and content and "application/json" in content:
                    content[PROBLEM_JSON] = content.pop("application/json")
            # 503: the database could not be reached (nothing done; retry after a second).
            shared = [HTTPStatus.UNAUTHORIZED, HTTPStatus.FORBIDDEN, HTTPStatus.SERVICE_UNAVAILABLE]
            if method.upper() == "POST":
                operation.setdefault("parameters", []).append(IDEMPOTENCY_KEY_PARAMETER)
                # A repeat of a key whose first request is still being answered after
                # the repeat has waited a few seconds for it.
                shared.append(HTTPStatus.CONFLICT)
            if method.upper() in WRITE_METHODS:
                shared += [
                    HTTPStatus.NOT_FOUND,
                    HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
                    HTTPStatus.UNSUPPORTED_MEDIA_TYPE,
                    HTTPStatus.UNPROCESSABLE_ENTITY,
                    HTTPStatus.TOO_MANY_REQUESTS,
                ]
            if "{" in path:
                shared.append(HTTPStatus.NOT_FOUND)
            if operation.get("parameters"):
                shared.append(HTTPStatus.UNPROCESSABLE_ENTITY)
            documented = {str(status) for status in responses}
            for status in shared:
                if str(status.value) not in documented:
                    responses[status.value] = status.name
                    documented.add(str(status.value))


class ProblemApi(Api):
    """flask-smorest's Api, with problem+json errors (RFC 9457), each documented."""

    ERROR_SCHEMA = ProblemSchema
    # Every answer an operation gives is documented with its code: no catch-all.
    DEFAULT_ERROR_RESPONSE_NAME = None

    def __init__(self, app: Flask) -> None:
        super().__init__(app, spec_kwargs={"extra_plugins": [ProblemResponses()]})

    def _register_pagination_header(self) -> None:
        # The header carries JSON, which OpenAPI says with "content"; a "schema" would
        # mean the "simple" style ("total,3,page,1").
        self.spec.components.header(
            "PAGINATION",
            {
                "description": "Pagination metadata",
                "content": {"application/json": {"schema": PaginationMetadataSchema}},
            },
            lazy=True,
        )

    def _register_responses(self) -> None:
        for status in HTTPStatus:
            response: dict[str, Any] = {"description": status.phrase}
            if status >= 400:
                response["schema"] = self.ERROR_SCHEMA
            prepare_response(response, self.spec, PROBLEM_JSON)
            self.spec.components.response(status.name, response, lazy=True)

    def handle_http_exception(self, error: HTTPException) -> Response:
        if not _wants_json():
            return _error_page(error)
        data = getattr(error, "data", None) or {}
        status = error.code or 500
        errors = data.get("errors") or data.get("messages")
        extra: dict[str, Any] = {}
        if errors:
            extra["errors"] = _flatten_locations(errors)
        if status == 400 and errors:
            # A body that is not JSON at all, or not an object: the contract says 422.
            status = 422
        detail = data.get("message") or error.description
        if status == 422:
            detail = data.get("message") or "The request has invalid fields; see errors."
        if status == 422:
            response = _invalid(detail, **extra)
        else:
            response = problem(status, _title(status), detail, **extra)
        # Allow (405), WWW-Authenticate and the like, as werkzeug would send them.
        for name, value in error.get_headers():
            if name.lower() != "content-type":
                response.headers[name] = value
        for name, value in (data.get("headers") or {}).items():
            response.headers[name] = value
        return response


# What a person who followed a link or reloaded a page should read.
PAGE_ERROR_MESSAGES = {
    404: "There is no page at this address. Check it, or start again from the start page.",
    405: "This address only takes a form that was sent: go back to the page the form "
    "was on and send it from there.",
}


def _error_page(error: HTTPException) -> Response:
    """An HTTP error for a person: the site's own page, with its links."""
    if "partsflow_pages" not in current_app.extensions:
        return error.get_response()
    status = error.code or 500
    response = Response(
        render_template(
            "pages/error.html",
            title=_title(status),
            message=PAGE_ERROR_MESSAGES.get(status, error.description),
        ),
        status=status,
        mimetype="text/html",
    )
    for name, value in error.get_headers():
        if name.lower() != "content-type":
            response.headers[name] = value
    return response


def _flatten_locations(errors: Any) -> dict[str, list[str]]:
    """webargs nests errors by location ({"json": {"quantity": [...]}}): flatten them."""
    if not isinstance(errors, dict):
        return {"_request": [str(errors)]}
    flat: dict[str, list[str]] = {}
    for location, fields_ in errors.items():
        if location in ("json", "query", "form", "headers", "files", "path") and isinstance(
            fields_, dict
        ):
            for name, messages in fields_.items():
                flat[str(name)] = _messages(messages)
        elif location in ("json", "query", "form"):
            flat["_body" if location == "json" else f"_{location}"] = _messages(fields_)
        else:
            flat[str(location)] = _messages(fields_)
    return flat


def _messages(value: Any, path: str = "") -> list[str]:
    """A field's messages as sentences; those about its parts (a list's items, a
    nested object's fields) say which part: ``"0.quantity: Must be ..."``."""
    prefix = f"{path}: " if path else ""
    if isinstance(value, str):
        return [prefix + value]
    if isinstance(value, dict):
        return [
            message
            for key, inner in value.items()
            for message in _messages(inner, f"{path}.{key}" if path else str(key))
        ]
    if isinstance(value, list | tuple):
        return [message for inner in value for message in _messages(inner, path)]
    return [prefix + str(value)]


def _title(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


def _wants_json() -> bool:
    # Probes answer programs (load balancers, Prometheus), whatever they accept.
    probes = {f"/{service_context().name}/{probe}" for probe in PROBES}
    if "/api/" in request.path or request.path in probes:
        return True
    best = request.accept_mimetypes.best_match(["text/html", "application/json", PROBLEM_JSON])
    return best != "text/html"


def app_settings(config: Mapping[str, Any] | None, settings: Settings | None) -> Settings:
    """The settings an app factory works with. Called without any (gunicorn's
    ``create_app()``), the app is the process: it reads the environment and sets up
    the process's logging, as `partsflow run` and `partsflow worker` do for theirs."""
    if settings is not None:
        return settings
    settings = load_settings(config)
    configure_logging(settings.log_level, settings.log_format)
    return settings


def create_service_app(
    name: str,
    import_name: str,
    *,
    settings: Settings,
    db: Database,
    title: str,
    users: UserStore | None = None,
) -> tuple[Flask, ProblemApi]:
    prefix = f"/{name}"
    app = Flask(import_name, static_url_path=f"{prefix}/static")
    app.config.update(
        SECRET_KEY=settings.secret_key,
        MAX_CONTENT_LENGTH=settings.max_body_bytes,
        SESSION_COOKIE_NAME="partsflow_session",
        SESSION_COOKIE_PATH="/",
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        SESSION_COOKIE_SECURE=settings.secure_cookies,
        PERMANENT_SESSION_LIFETIME=timedelta(hours=SESSION_HOURS),
        WTF_CSRF_TIME_LIMIT=None,
        API_TITLE=title,
        API_VERSION="v1",
        OPENAPI_VERSION="3.0.3",
        OPENAPI_URL_PREFIX=f"{prefix}/api",
        OPENAPI_JSON_PATH="openapi.json",
        API_SPEC_OPTIONS={
            "components": {"securitySchemes": {"bearerAuth": {"type": "http", "scheme": "bearer"}}},
            "security": [{"bearerAuth": []}],
        },
        JSON_SORT_KEYS=False,
    )
    registry = CollectorRegistry()
    context = ServiceContext(
        name=name,
        settings=settings,
        db=db,
        users=users or UserStore(settings.users_path),
        registry=registry,
    )
    app.extensions["partsflow"] = context
    app.wsgi_app = ChunkedBodyLimit(app.wsgi_app, settings.max_body_bytes)  # type: ignore[method-assign]
    app.session_interface = PageSessions(f"{prefix}/api/")
    api = ProblemApi(app)
    _install_request_hooks(app, prefix, context)
    _install_error_handlers(app)
    _install_probes(app, prefix, context)
    api_docs.install(app, prefix, title)
    return app, api


class ChunkedBodyLimit:
    """Gives a chunked body (no Content-Length) the length it turns out to have, so
    that ``MAX_CONTENT_LENGTH`` refuses it (413) like any body that declares its size.

    Werkzeug alone stops reading a chunked body at the limit and hands the cut body on
    as if it were whole: parsed, or refused as broken JSON. Here it is read up to one
    byte past the limit, enough to know it is too large without holding more.
    """

    def __init__(self, app: Callable[..., Iterable[bytes]], max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        encoding = environ.get("HTTP_TRANSFER_ENCODING")
        chunked = encoding is not None and "chunked" in parse_set_header(encoding)
        # Only a server that decodes the chunks says so (wsgi.input_terminated); from
        # any other, werkzeug reads no body at all.
        if chunked and environ.get("wsgi.input_terminated"):
            try:
                body = self._read_past_limit(environ["wsgi.input"])
            except (OSError, ValueError):
                return ClientDisconnected()(environ, start_response)
            environ["wsgi.input"] = io.BytesIO(body)
            environ["CONTENT_LENGTH"] = str(len(body))
            del environ["HTTP_TRANSFER_ENCODING"]
        return self.app(environ, start_response)

    def _read_past_limit(self, stream: Any) -> bytes:
        body = bytearray()
        while len(body) <= self.max_bytes:
            data = stream.read(min(64 * 1024, self.max_bytes + 1 - len(body)))
            if not data:
                break
            body += data
        return bytes(body)


class PageSessions(SecureCookieSessionInterface):
    """The signed cookie session, for pages only: the JSON API takes tokens, so its
    requests neither read nor sign a cookie (a cookie alone gets them a 401)."""

    def __init__(self, api_prefix: str) -> None:
        self.api_prefix = api_prefix

    def open_session(self, app: Flask, request: Request) -> SessionMixin | None:
        if request.path.startswith(self.api_prefix):
            return self.make_null_session(app)
        return super().open_session(app, request)


# -- request hooks -------------------------------------------------------------------------


def _install_request_hooks(app: Flask, prefix: str, context: ServiceContext) -> None:
    requests_total = Counter(
        "partsflow_http_requests_total",
        "HTTP requests handled",
        ["method", "endpoint", "status"],
        registry=context.registry,
    )
    latency = Histogram(
        "partsflow_http_request_seconds",
        "HTTP request latency",
        ["method", "endpoint"],
        registry=context.registry,
        buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
    )
    api_prefix = f"{prefix}/api/v1/"
    probe_paths = {f"{prefix}/{probe}" for probe in PROBES}

    @app.before_request
    def _begin() -> Response | None:
        g.started = time.perf_counter()
        # Taken from the caller only when they fit where they go (log lines, the outbox).
        g.request_id = usable_id(request.headers.get("X-Request-ID")) or str(uuid.uuid4())
        correlation_id = usable_id(request.headers.get("X-Correlation-ID")) or g.request_id
        g.message_token = current_message.set(MessageContext(correlation_id=correlation_id))
        # For a server in front that waits until what the request caused is applied.
        request.environ[CORRELATION_ENVIRON_KEY] = correlation_id
        structlog.contextvars.bind_contextvars(
            request_id=g.request_id, correlation_id=correlation_id, service=context.name
        )
        if not request.path.startswith(api_prefix):
            if isinstance(request.routing_exception, MethodNotAllowed | NotFound):
                # Said before the pages' CSRF check, which would take a POST to a probe
                # (or to no page at all) for a refused form (400).
                raise request.routing_exception
            return None
        if "\x00" in request.path or b"%00" in request.query_string:
            return _nul_refused()
        token = parse_bearer(request.headers.get("Authorization"))
        user = context.users.by_token(token) if token else None
        if user is None:
            response = problem(
                401, "Unauthorized", "Send an API token: Authorization: Bearer <token>."
            )
            response.headers["WWW-Authenticate"] = 'Bearer realm="partsflow"'
            return response
        g.user = user
        structlog.contextvars.bind_contextvars(user=user.name)
        # The role is checked before anything is said about the body.
        permission = _permission_asked(app)
        if permission is not None and not user.can(permission):
            return _forbidden(user, permission)
        if request.method in ("POST", "PUT", "PATCH") and _has_body() and not request.is_json:
            return problem(
                415,
                "Unsupported Media Type",
                "Send the body as JSON (Content-Type: application/json).",
            )
        return None

    # Between the two hooks: a write refused for its rate leaves no idempotency record
    # behind, so the same key works once the client has waited.
    _install_rate_limit(app, api_prefix, context)

    @app.before_request
    def _idempotent_replay() -> Response | None:
        user: User | None = g.get("user")
        # Present but empty is refused (422) rather than taken for absent.
        if user is not None and request.method == "POST" and "Idempotency-Key" in request.headers:
            return _idempotency_begin(context, user)
        return None

    @app.after_request
    def _finish(response: Response) -> Response:
        _idempotency_finish(context, response)
        endpoint = request.url_rule.rule if request.url_rule else "unmatched"
        elapsed = time.perf_counter() - g.get("started", time.perf_counter())
        # Any word is a method to HTTP: those no route takes share one label, so that
        # nobody can grow the metrics without bound.
        method = request.method if request.method in KNOWN_METHODS else "other"
        requests_total.labels(method, endpoint, str(response.status_code)).inc()
        latency.labels(method, endpoint).observe(elapsed)
        # A replay keeps the first answer's.
        response.headers.setdefault("X-Request-ID", g.get("request_id", ""))
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("Referrer-Policy", "same-origin")
        response.headers.setdefault(
            "Content-Security-Policy",
            "default-src 'self'; img-src 'self' data:; style-src 'self'; "
            "script-src 'self'; frame-ancestors 'none'; form-action 'self'",
        )
        response.headers.setdefault("X-Frame-Options", "DENY")
        # The one access log line of a request (gunicorn keeps none): every request
        # but the probes' answers, which come every few seconds.
        if response.status_code >= 500 or request.path not in probe_paths:
            log.info(
                "request",
                extra={
                    "method": request.method,
                    "path": request.path,
                    "status": response.status_code,
                    "ms": round(elapsed * 1000, 2),
                },
            )
        return response

    @app.teardown_request
    def _teardown(exc: BaseException | None) -> None:
        if exc is not None:
            _idempotency_abandon(context)
        token = g.pop("message_token", None)
        if token is not None:
            current_message.reset(token)
        structlog.contextvars.clear_contextvars()


def _nul_refused() -> Response:
    """NUL can name nothing here (PostgreSQL's text cannot hold it): no such resource
    in a path, an invalid value in a query."""
    if "\x00" in request.path:
        return problem(404, "Not Found", "Nothing is named with a NUL character.")
    names = sorted({name for name, value in request.args.items(multi=True) if "\x00" in value})
    return _invalid(
        "A query value holds a NUL character.",
        errors={name: ["holds a NUL character"] for name in names or ["_query"]},
    )


def _has_body() -> bool:
    return bool(request.content_length) or request.headers.get("Transfer-Encoding") == "chunked"


# -- rate limits ---------------------------------------------------------------------------


def _install_rate_limit(app: Flask, api_prefix: str, context: ServiceContext) -> None:
    """Writes to the JSON API, counted per user: past the limit, 429 with Retry-After.

    One budget per user and service, for all of the service's write endpoints
    together. The counts live in ``rate_limit_storage_url``: in this process, or in
    Redis so that every gunicorn worker and web process draws on the same budget.
    """
    settings = context.settings
    if not settings.write_rate_limit.strip():
        return

    def user_key() -> str:
        return f"{context.name}:{g.user.name}"

    def not_an_api_write() -> bool:
        return not request.path.startswith(api_prefix) or g.get("user") is None

    limiter = Limiter(
        user_key,
        application_limits=[
            ApplicationLimit(
                settings.write_rate_limit,
                key_function=user_key,
                scope="writes",
                methods=WRITE_METHODS,
                exempt_when=not_an_api_write,
            )
        ],
        storage_uri=settings.rate_limit_storage_url,
        # Redis out of reach must not stop every write: each process counts on its
        # own until Redis is back.
        in_memory_fallback_enabled=True,
        strategy="fixed-window",
        key_prefix=f"{settings.bus_prefix}:rate",
        on_breach=_too_many_writes,
    )
    limiter.init_app(app)


def _too_many_writes(breach: RequestLimit) -> Response:
    wait = max(1, math.ceil(breach.window.reset_time - time.time()))
    response = problem(
        429,
        "Too Many Requests",
        f"Too many writes: at most {breach.limit}. Try again in {wait} seconds.",
    )
    response.headers["Retry-After"] = str(wait)
    return response


# -- idempotency ---------------------------------------------------------------------------


def _request_hash() -> str:
    """The request as sent again: a JSON body by its content, not its spacing or the
    order of its keys."""
    digest = hashlib.sha256()
    digest.update(request.method.encode())
    digest.update(request.path.encode())
    body = request.get_data(cache=True)
    with contextlib.suppress(ValueError):  # not JSON: its bytes are what it is
        body = json.dumps(read_json(body), sort_keys=True, separators=(",", ":")).encode()
    digest.update(body)
    return digest.hexdigest()


def _invalid(detail: str, **extra: Any) -> Response:
    """422, the same problem as a rule broken in a service (:class:`InvalidInput`)."""
    return problem(422, InvalidInput.title, detail, slug=InvalidInput.type_slug, **extra)


def _idempotency_begin(context: ServiceContext, user: User) -> Response | None:
    key = request.headers["Idempotency-Key"].strip()
    if not key or len(key) > 255:
        return _invalid(
            "Idempotency-Key must be 1-255 characters.",
            errors={"Idempotency-Key": ["must be 1-255 characters"]},
        )
    request_hash = _request_hash()
    # A replay that arrives while the first request is being answered waits for its
    # answer rather than refusing what the client was right to send twice.
    deadline = time.monotonic() + IDEMPOTENCY_WAIT_SECONDS
    while True:
        row = _claim_idempotency_key(context, user, key, request_hash)
        if row is None:
            g.idempotency_key = key
            return None
        if row.request_hash != request_hash:
            return _invalid(
                "This Idempotency-Key was used with a different request.",
                errors={"Idempotency-Key": ["already used with a different request body"]},
            )
        if row.status_code is not None:
            break
        if time.monotonic() >= deadline:
            return problem(
                409, "Conflict", "A request with this Idempotency-Key is still in progress."
            )
        time.sleep(IDEMPOTENCY_POLL_SECONDS)
    response = Response(row.response_body, status=row.status_code, mimetype="application/json")
    if row.status_code >= 400:
        response.mimetype = PROBLEM_JSON
    response.headers["Idempotent-Replayed"] = "true"
    if row.request_id:
        response.headers["X-Request-ID"] = row.request_id
    return response


def _claim_idempotency_key(
    context: ServiceContext, user: User, key: str, request_hash: str
) -> Row[Any] | None:
    """Record ``key`` as this request's and return None, or return the record of the
    request that holds it (answered, or still in progress)."""
    table = context.db.bus.idempotency_keys
    now = datetime.now(UTC)
    with context.db.transaction() as tx:
        row = tx.session.execute(
            select(table).where(table.c.principal == user.name, table.c.key == key)
        ).first()
        if (
            row is not None
            and row.status_code is None
            and row.created_at < now - IDEMPOTENCY_STALE_AFTER
        ):
            # A request that never finished (its process died): let this one try again.
            tx.session.execute(
                delete(table).where(table.c.principal == user.name, table.c.key == key)
            )
            row = None
        if row is None:
            try:
                with tx.session.begin_nested():
                    tx.session.execute(
                        insert(table).values(
                            principal=user.name,
                            key=key,
                            request_hash=request_hash,
                            request_id=g.request_id,
                            created_at=now,
                        )
                    )
            except IntegrityError:
                row = tx.session.execute(
                    select(table).where(table.c.principal == user.name, table.c.key == key)
                ).first()
    return row


def _idempotency_finish(context: ServiceContext, response: Response) -> None:
    key = g.pop("idempotency_key", None)
    if key is None or g.get("commit_in_doubt"):
        # In doubt, the key stays "in progress": a retry is refused until the record
        # expires rather than possibly doing the work twice.
        return
    table = context.db.bus.idempotency_keys
    user = g.user
    with context.db.transaction() as tx:
        if response.status_code >= 500:
            tx.session.execute(
                delete(table).where(table.c.principal == user.name, table.c.key == key)
            )
        else:
            tx.session.execute(
                update(table)
                .where(table.c.principal == user.name, table.c.key == key)
                .values(status_code=response.status_code, response_body=response.get_data(True))
            )


def _idempotency_abandon(context: ServiceContext) -> None:
    key = g.pop("idempotency_key", None)
    if key is None:
        return
    table = context.db.bus.idempotency_keys
    with context.db.transaction() as tx:
        tx.session.execute(
            delete(table).where(table.c.principal == g.user.name, table.c.key == key)
        )


# -- errors ------------------------------------------------------------------------------


def _install_error_handlers(app: Flask) -> None:
    @app.errorhandler(DomainError)
    def _domain_error(error: DomainError) -> Response:
        extra = dict(error.extra)
        if isinstance(error, InvalidInput):
            extra["errors"] = error.errors
        return problem(error.status, error.title, error.detail, slug=error.type_slug, **extra)

    @app.errorhandler(RateLimitExceeded)
    def _rate_limited(error: RateLimitExceeded) -> Response:
        # The breach callback built the answer (with Retry-After) while it knew the window.
        return error.get_response()

    @app.errorhandler(Exception)
    def _unexpected(error: Exception) -> Response | HTTPException:
        if isinstance(error, HTTPException):
            return error
        # Retrying is safe only if nothing was committed: not when COMMIT itself failed.
        g.commit_in_doubt = getattr(error, "partsflow_commit_in_doubt", False)
        if is_transient_db_error(error) and not g.commit_in_doubt:
            log.warning("database unavailable: %s", str(error).splitlines()[0])
            answer = problem(
                503, "Service Unavailable", "The database could not be reached; try again."
            )
            answer.headers["Retry-After"] = "1"
            return answer
        log.exception("unhandled error")
        return problem(500, "Internal Server Error", "Something went wrong on our side.")


# -- auth for views ------------------------------------------------------------------------


def current_user() -> User:
    return g.user


def _forbidden(user: User, permission: str) -> Response:
    return problem(403, "Forbidden", f"The role {user.role!r} may not do this ({permission}).")


def _permission_asked(app: Flask) -> str | None:
    """The permission the view this request is routed to asks for (see :func:`requires`)."""
    view = app.view_functions.get(request.endpoint or "")
    view_class = getattr(view, "view_class", None)
    handler = getattr(view_class, request.method.lower(), None) if view_class else view
    return getattr(handler, "required_permission", None)


def requires(permission: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """A view that needs ``permission``; the API's before-request hook has already
    turned a missing or unknown token into 401."""

    def decorate(view: Callable[..., Any]) -> Callable[..., Any]:
        @wraps(view)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            user: User | None = g.get("user")
            if user is None:
                return problem(401, "Unauthorized", "Sign in first.")
            if not user.can(permission):
                return _forbidden(user, permission)
            return view(*args, **kwargs)

        wrapper.required_permission = permission  # type: ignore[attr-defined]
        return wrapper

    return decorate


# -- probes --------------------------------------------------------------------------------


def _broker_check(settings: Settings, name: str) -> Callable[[], None]:
    def broker() -> None:
        connection = connect(settings, name=f"{name}-readyz")
        try:
            connection.ensure_connection(max_retries=1)
        finally:
            connection.release()

    return broker


def _install_probes(app: Flask, prefix: str, context: ServiceContext) -> None:
    context.registry.register(OutboxCollector(context.db))
    context.registry.register(QueueCollector(context.settings, context.name))
    if not context.settings.is_memory_bus:
        context.readiness_checks.append(_broker_check(context.settings, context.name))

    @app.get(f"{prefix}/healthz")
    def healthz() -> Response:
        return jsonify(status="ok", service=context.name)

    @app.get(f"{prefix}/readyz")
    def readyz() -> Response:
        checks: dict[str, str] = {}
        ok = True
        try:
            context.db.ping()
            checks["database"] = "ok"
        except Exception as exc:
            ok = False
            checks["database"] = f"unreachable: {exc.__class__.__name__}"
        for check in context.readiness_checks:
            name = getattr(check, "__name__", "check")
            try:
                check()
                checks[name] = "ok"
            except Exception as exc:
                ok = False
                checks[name] = f"failed: {exc}"
        response = jsonify(status="ready" if ok else "not ready", checks=checks)
        response.status_code = 200 if ok else 503
        return response

    @app.get(f"{prefix}/metrics")
    def metrics() -> Response:
        return Response(generate_latest(context.registry), mimetype="text/plain; version=0.0.4")
