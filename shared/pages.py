"""What every service's web pages share: the layout and stylesheet, signing in with a
session cookie, CSRF on every form, flashed messages, times shown in the reader's
UTC offset, and ``page_requires``.

The pages of the three services read as one site: the apps share the secret key and
the session cookie (path ``/``), so signing in at ``/login`` opens every prefix. The
JSON API never looks at the session; it takes Bearer tokens only (``shared.web``).

A page form carries the JSON API's field names and is checked twice: WTForms turns
the text a browser sends into values (and checks the CSRF token), then the API's own
marshmallow schema applies the same rules the API applies. Errors of either, and the
domain's refusals, are shown next to the field they concern.
"""

from __future__ import annotations

import logging
import math
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from functools import wraps
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote, urlsplit

import limits
import limits.storage
import limits.strategies
import marshmallow as ma
from flask import (
    Blueprint,
    Flask,
    Response,
    current_app,
    flash,
    g,
    redirect,
    render_template,
    request,
    session,
)
from flask_wtf import FlaskForm
from flask_wtf.csrf import CSRFError, CSRFProtect
from markupsafe import Markup
from wtforms import Field, HiddenField, PasswordField, SelectChoice, SelectField, StringField
from wtforms.fields import FieldList, FormField
from wtforms.validators import InputRequired, Length

from shared.auth import (
    ACKNOWLEDGE_ALERTS,
    MANAGE_SHIPMENTS,
    MANAGE_STOCK,
    READ,
    RECORD_EVENTS,
    RESERVE,
    User,
)
from shared.clock import Clock
from shared.errors import Conflict, DomainError, InvalidInput, NotFound
from shared.web import MAX_PAGE, SESSION_HOURS, service_context

T = TypeVar("T")

log = logging.getLogger("partsflow.pages")

SESSION_USER = "user"
# Sign-ins a user name may be tried with before it waits: guessing is slowed down, a
# person mistyping twice is not.
SIGN_IN_ATTEMPTS = "10/minute"
# When the session was signed in (seconds since the epoch).
SESSION_BEGAN = "began"
SESSION_OFFSET = "utc_offset"
HERE = Path(__file__).parent

# Every offset a place keeps (standard or summer time); a form's times are read in one.
UTC_OFFSETS = (
    "-12:00",
    "-11:00",
    "-10:00",
    "-09:30",
    "-09:00",
    "-08:00",
    "-07:00",
    "-06:00",
    "-05:00",
    "-04:00",
    "-03:30",
    "-03:00",
    "-02:00",
    "-01:00",
    "+00:00",
    "+01:00",
    "+02:00",
    "+03:00",
    "+03:30",
    "+04:00",
    "+04:30",
    "+05:00",
    "+05:30",
    "+05:45",
    "+06:00",
    "+06:30",
    "+07:00",
    "+08:00",
    "+08:45",
    "+09:00",
    "+09:30",
    "+10:00",
    "+10:30",
    "+11:00",
    "+12:00",
    "+12:45",
    "+13:00",
    "+13:45",
    "+14:00",
)
DEFAULT_OFFSET = "+00:00"
# What a datetime-local input sends: minutes, or seconds when the browser adds them.
DATETIME_LOCAL = ["%Y-%m-%dT%H:%M", "%Y-%m-%dT%H:%M:%S"]

# What the navigation bar offers, and to whom; the pages live on three prefixes.
NAVIGATION = (
    ("Attention", "/", READ),
    ("Stock", "/inventory/stock", READ),
    ("Reservations", "/inventory/reservations", READ),
    ("Ledger", "/inventory/movements", READ),
    ("Shipments", "/shipments/", READ),
    ("Control tower", "/tracking/control-tower", READ),
)


@dataclass(frozen=True)
class PagesState:
    clock: Clock
    sign_in_guard: SignInGuard


# -- setting up an app ---------------------------------------------------------------------


def install(app: Flask, *, clock: Clock) -> None:
    """Give a service app the shared layout, stylesheet, CSRF and session sign-in."""
    prefix = f"/{service_context(app).name}"
    app.config["WTF_CSRF_CHECK_DEFAULT"] = False  # checked below, for pages only
    csrf = CSRFProtect(app)
    settings = service_context(app).settings
    # Made with the app, not at the first sign-in: sign-ins arriving together must
    # count in one place.
    guard = SignInGuard(settings.rate_limit_storage_url, f"{settings.bus_prefix}:sign-in")
    app.extensions["partsflow_pages"] = PagesState(clock, guard)
    shared = Blueprint(
        "pages",
        __name__,
        template_folder=str(HERE / "templates"),
        static_folder=str(HERE / "static"),
        static_url_path="/assets",
        url_prefix=prefix,
    )
    app.register_blueprint(shared)
    api_prefix = f"{prefix}/api/"

    @app.before_request
    def _protect_forms() -> None:
        # The JSON API is for token holders, who cannot be driven by another site's
        # form; every other POST is a page form and must carry the session's token.
        if not request.path.startswith(api_prefix):
            csrf.protect()

    @app.after_request
    def _page_headers(response: Response) -> Response:
        if response.mimetype == "text/html":
            # A page (signed in, or a job opened by its texted link) must not be kept
            # by a shared browser or a proxy.
            response.headers["Cache-Control"] = "no-store"
        return response

    app.register_error_handler(CSRFError, _csrf_refused)
    app.context_processor(_layout_context)
    app.jinja_env.trim_blocks = True
    app.jinja_env.lstrip_blocks = True
    app.jinja_env.filters.update(
        when=format_when, ago=format_ago, local_input=local_input, as_datetime=as_datetime
    )
    app.jinja_env.globals.update(UTC_OFFSETS=UTC_OFFSETS, request_target=request_target)


def page_blueprint(name: str, import_name: str, url_prefix: str) -> Blueprint:
    """A service's blueprint of pages: a domain error it does not catch becomes an
    HTML page (the API's problem+json is for programs)."""
    blueprint = Blueprint(name, import_name, template_folder="templates", url_prefix=url_prefix)
    blueprint.register_error_handler(DomainError, _domain_error_page)
    return blueprint


def _layout_context() -> dict[str, Any]:
    user = page_user()
    return {
        "page_user": user,
        "navigation": [
            (label, href)
            for label, href, permission in NAVIGATION
            if user is not None and user.can(permission)
        ],
        "current_path": request.path,
        "display_offset": display_offset(),
        "offset_chosen": SESSION_OFFSET in session,
        "can": (lambda permission: user is not None and user.can(permission)),
        "MANAGE_STOCK": MANAGE_STOCK,
        "RESERVE": RESERVE,
        "MANAGE_SHIPMENTS": MANAGE_SHIPMENTS,
        "ACKNOWLEDGE_ALERTS": ACKNOWLEDGE_ALERTS,
        "RECORD_EVENTS": RECORD_EVENTS,
    }


def _csrf_refused(error: CSRFError) -> tuple[str, int]:
    return (
        render_template(
            "pages/error.html",
            title="Form refused",
            message=(
                "This form was not accepted: it had expired or did not come from a "
                "Partsflow page. Go back, reload the page and send it again."
            ),
        ),
        400,
    )


def _domain_error_page(error: DomainError) -> tuple[str, int]:
    return (
        render_template("pages/error.html", title=error.title, message=error.detail),
        error.status,
    )


# -- who is reading ------------------------------------------------------------------------


def page_user() -> User | None:
    """The signed-in user of this request, read from the session cookie: a session
    lasts SESSION_HOURS from its sign-in however busy (a copy of its cookie is no key
    for longer), and none begun before the user's ``sessions_from`` counts."""
    if "page_user" not in g:
        name, began = session.get(SESSION_USER), session.get(SESSION_BEGAN)
        # Looked up on every request, so a changed role or a removed user counts at once.
        user = service_context().users.get(name) if isinstance(name, str) else None
        if user is not None and not (
            isinstance(began, int | float)
            # (A minute's grace: the next request may reach a machine whose clock is
            # a little behind the one that signed it in.)
            and user.sessions_from <= began <= time.time() + 60
            and time.time() - began <= SESSION_HOURS * 3600
        ):
            user = None
        g.page_user = user
    return g.page_user


def page_number() -> int:
    """The list page asked for in ``?page=``: 1 when missing or not a number, and no
    further than the API goes (a page past the end is simply empty)."""
    try:
        return min(max(1, int(request.args.get("page", "1"))), MAX_PAGE)
    except ValueError:
        return 1


def page_actor() -> str:
    """The name a page's change is recorded under: its signed-in user's."""
    user = page_user()
    assert user is not None  # page_requires let the request in
    return user.name


def sign_in(user: User) -> None:
    session.clear()  # nothing from before signing in carries over
    session.permanent = True
    session[SESSION_USER] = user.name
    session[SESSION_BEGAN] = time.time()
    g.page_user = user


def sign_out() -> None:
    session.clear()
    g.page_user = None


def request_target() -> str:
    """This request's address, to link back to it: the path quoted again, since a job
    id may hold a ``#``, a ``?`` or a ``%``."""
    query = request.query_string.decode()
    return quote(request.path, safe="/") + (f"?{query}" if query else "")


def login_url(target: str) -> str:
    return "/login?next=" + quote(target, safe="/")


def page_requires(permission: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """A page for users with ``permission``: anyone else is sent to the login form,
    and a signed-in user without it sees a 403 page."""

    def decorate(view: Callable[..., Any]) -> Callable[..., Any]:
        @wraps(view)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            user = page_user()
            if user is None:
                return redirect(login_url(request_target()))
            if not user.can(permission):
                return forbidden(user)
            return view(*args, **kwargs)

        wrapper.required_permission = permission  # type: ignore[attr-defined]
        return wrapper

    return decorate


def forbidden(user: User) -> tuple[str, int]:
    return (
        render_template(
            "pages/error.html",
            title="Not for your role",
            message=f"You are signed in as {user.name} ({user.role}); this page is not for "
            "that role. Ask an administrator if you need it.",
        ),
        403,
    )


def local_path(target: str | None, default: str = "/") -> str:
    """``target`` if it is a path on this site (never another site), else ``default``;
    a path holding a control character (a line break) cannot be a Location."""
    if (
        not target
        or not target.startswith("/")
        or target.startswith("//")
        or "\\" in target
        or any(ord(c) < 32 or ord(c) == 127 for c in target)
    ):
        return default
    parts = urlsplit(target)
    if parts.scheme or parts.netloc:
        return default
    return target


# -- time ------------------------------------------------------------------------------------


def page_now() -> datetime:
    return current_app.extensions["partsflow_pages"].clock.now()


def display_offset() -> str:
    offset = session.get(SESSION_OFFSET)
    return offset if offset in UTC_OFFSETS else DEFAULT_OFFSET


def remember_offset(offset: str) -> None:
    if offset in UTC_OFFSETS and offset != session.get(SESSION_OFFSET):
        session[SESSION_OFFSET] = offset


def offset_zone(offset: str) -> timezone:
    sign = -1 if offset.startswith("-") else 1
    hours, minutes = offset[1:].split(":")
    return timezone(sign * timedelta(hours=int(hours), minutes=int(minutes)))


def zone_label(offset: str) -> str:
    return "UTC" if offset == DEFAULT_OFFSET else f"UTC{offset}"


def aware(local: datetime, offset: str) -> str:
    """A time read from a form in ``offset``, as the API's ISO 8601 text."""
    return local.replace(tzinfo=offset_zone(offset)).isoformat()


def as_datetime(value: datetime | str | None) -> datetime | None:
    if value is None or isinstance(value, datetime):
        return value
    return datetime.fromisoformat(value)


def local_input(value: datetime | str | None) -> str:
    """A time as a ``datetime-local`` input shows it, in the reader's offset."""
    moment = as_datetime(value)
    if moment is None:
        return ""
    return moment.astimezone(offset_zone(display_offset())).strftime("%Y-%m-%dT%H:%M")


def format_when(value: datetime | str | None, with_zone: bool = True) -> Markup | str:
    """A ``<time>`` element in the reader's offset, machine-readable in UTC."""
    moment = as_datetime(value)
    if moment is None:
        return "—"
    offset = display_offset()
    text = moment.astimezone(offset_zone(offset)).strftime("%Y-%m-%d %H:%M")
    if with_zone:
        text += f" {zone_label(offset)}"
    return Markup('<time datetime="{}">{}</time>').format(
        moment.astimezone(UTC).isoformat(timespec="seconds"), text
    )


def when_in_words(value: datetime | str | None, offset: str | None = None) -> str:
    """A moment as plain text (for a form's error), in the zone given (the one chosen
    beside the time typed), else in the page's."""
    moment = as_datetime(value)
    if moment is None:
        return "—"
    offset = offset if offset in UTC_OFFSETS else display_offset()
    return f"{moment.astimezone(offset_zone(offset)):%Y-%m-%d %H:%M} {zone_label(offset)}"


def format_ago(value: datetime | str | None) -> str:
    """How far a time is from now, in words: "in 3 h 20 min", "45 min ago"."""
    moment = as_datetime(value)
    if moment is None:
        return ""
    seconds = (moment - page_now()).total_seconds()
    words = duration_words(abs(seconds))
    if words == "now":
        return "now"
    return f"in {words}" if seconds > 0 else f"{words} ago"


def duration_words(seconds: float) -> str:
    minutes = int(seconds // 60)
    if minutes < 1:
        return "now"
    days, minutes = divmod(minutes, 24 * 60)
    hours, minutes = divmod(minutes, 60)
    if days:
        return f"{days} d {hours} h" if hours else f"{days} d"
    if hours:
        return f"{hours} h {minutes} min" if minutes else f"{hours} h"
    return f"{minutes} min"


# -- forms -----------------------------------------------------------------------------------


class PageForm(FlaskForm):
    """A page form: knows what went wrong with it and answers with the right status."""

    problem: DomainError | None = None
    refused_status: int | None = None

    @property
    def status_code(self) -> int:
        if self.refused_status is not None:
            return self.refused_status
        return 422 if self.errors else 200

    def refuse(self, error: DomainError) -> None:
        """Show a domain error on the form: field errors next to their fields, the
        rest above the form."""
        self.problem = error
        errors = getattr(error, "errors", None) or error.extra.get("errors")
        if isinstance(errors, Mapping) and errors:
            add_errors(self, errors)
            self.refused_status = 409 if isinstance(error, Conflict) else 422
        else:
            self.form_errors.append(error.detail)
            self.refused_status = error.status if isinstance(error, Conflict | NotFound) else 422


def add_errors(form: FlaskForm, errors: Mapping[Any, Any], path: str = "") -> None:
    """Put ``{field: [messages]}`` (as marshmallow and the API give them, nested for
    nested fields) on the form's fields; what names no field goes above the form."""
    for key, messages in errors.items():
        field = _field_named(form, key)
        if isinstance(messages, Mapping):
            if isinstance(field, FormField):
                add_errors(field.form, messages, f"{path}{key}.")
                continue
            if isinstance(field, FieldList):
                for index, nested in messages.items():
                    entries = field.entries
                    position = int(index) if str(index).isdigit() else -1
                    if 0 <= position < len(entries) and isinstance(nested, Mapping):
                        target = entries[position]
                        if isinstance(target, FormField):
                            add_errors(target.form, nested, f"{path}{key}.{index}.")
                        else:
                            _append(target, _flat(nested))
                    else:
                        form.form_errors.extend(_flat(nested))
                # The list's own errors were taken when it validated: take them again,
                # so the form counts as having errors (and says so above it).
                field.errors = [entry.errors for entry in field.entries if entry.errors]
                continue
            flat = _flat(messages)
        else:
            flat = _flat(messages)
        if field is None or isinstance(field, FieldList | FormField):
            # A list of rows or a group has no one place for a message: say it above.
            label = f"{path}{key}"
            form.form_errors.extend(f"{label}: {m}" if key else m for m in flat)
        else:
            _append(field, flat)


def _field_named(form: FlaskForm, key: Any) -> Field | None:
    name = str(key)
    field = form._fields.get(name) if hasattr(form, "_fields") else None
    return field if isinstance(field, Field) else None


def _append(field: Field, messages: Sequence[str]) -> None:
    existing = list(field.errors) if isinstance(field.errors, list | tuple) else []
    field.errors = existing + [m for m in messages if m not in existing]


def _flat(messages: Any) -> list[str]:
    if isinstance(messages, str):
        return [messages]
    if isinstance(messages, Mapping):
        return [m for value in messages.values() for m in _flat(value)]
    if isinstance(messages, list | tuple):
        return [m for value in messages for m in _flat(value)]
    return [str(messages)]


def load_form(form: PageForm, schema: ma.Schema, payload: Mapping[str, Any]) -> Any:
    """Check a form's payload with the API's schema; None (and errors on the form)
    when the API would have answered 422."""
    try:
        return schema.load(payload)
    except ma.ValidationError as error:
        messages = error.messages if isinstance(error.messages, Mapping) else {"": error.messages}
        add_errors(form, messages)
        form.refused_status = 422
        return None


def carry_out(form: PageForm, action: Callable[[], T]) -> T | None:
    """Run a use case for a form; a domain error is shown on the form instead."""
    try:
        return action()
    except (InvalidInput, NotFound, Conflict) as error:
        form.refuse(error)
        return None


def named(items: Sequence[str], most: int = 10) -> str:
    """Items for a message that goes into the session cookie (a flash), which must
    stay small: the first few, then how many more."""
    shown = ", ".join(items[:most])
    return f"{shown} and {len(items) - most} more" if len(items) > most else shown


def split_list(text: str | None) -> list[str]:
    """Serial numbers and the like, typed one per line or separated by commas."""
    return [item for item in re.split(r"[\s,;]+", text or "") if item]


def choices(values: Sequence[str]) -> list[SelectChoice]:
    """A select's options, each shown as its value in words (``machine_down``: machine
    down)."""
    return [SelectChoice(value, value.replace("_", " ")) for value in values]


def warehouse_choices(warehouses: Sequence[Mapping[str, Any]], blank: str) -> list[SelectChoice]:
    return [SelectChoice("", blank)] + [
        SelectChoice(w["code"], f"{w['code']} — {w['name']} ({w['region']})") for w in warehouses
    ]


def offset_field() -> SelectField:
    return SelectField(
        "Times are in",
        choices=[SelectChoice(offset, zone_label(offset)) for offset in UTC_OFFSETS],
        default=DEFAULT_OFFSET,
    )


def form_defaults(form: FlaskForm) -> None:
    """Fill a fresh form's time zone with the one the reader used last."""
    field = getattr(form, SESSION_OFFSET, None)
    if field is not None and not form.is_submitted():
        field.data = display_offset()


def succeed(message: str, target: str) -> Response:
    flash(message, "success")
    return redirect(target)


# -- signing in ------------------------------------------------------------------------------


class LoginForm(PageForm):
    name = StringField("Name", validators=[InputRequired(), Length(max=100)])
    password = PasswordField("Password", validators=[InputRequired(), Length(max=500)])
    # The browser's UTC offset, filled in by zone.js: the zone pages start in.
    utc_offset = HiddenField()


class OffsetForm(PageForm):
    utc_offset = offset_field()


class SignInGuard:
    """Sign-in attempts counted per user name, in the rate limits' storage (Redis in
    production, so that every process counts together): past SIGN_IN_ATTEMPTS, that
    name waits out the window, so that passwords cannot be guessed at speed. A storage
    out of reach guards nothing rather than stopping every sign-in."""

    def __init__(self, storage_url: str, prefix: str) -> None:
        self.limit = limits.parse(SIGN_IN_ATTEMPTS)
        self.limiter = limits.strategies.FixedWindowRateLimiter(
            limits.storage.storage_from_string(storage_url)
        )
        self.prefix = prefix

    def attempt(self, name: str) -> int:
        """Count an attempt: 0 when it may go on, else the seconds until one may."""
        try:
            if self.limiter.hit(self.limit, self.prefix, name):
                return 0
            reset = self.limiter.get_window_stats(self.limit, self.prefix, name).reset_time
        except Exception:
            log.warning("sign-in guard unavailable", exc_info=True)
            return 0
        return max(1, math.ceil(reset - time.time()))


def account_blueprint() -> Blueprint:
    """``/login``, ``/logout`` and the reader's time zone, at the root of the site."""
    account = Blueprint("account", __name__)

    @account.route("/login", methods=["GET", "POST"])
    def login() -> Any:
        form = LoginForm()
        target = local_path(request.args.get("next"))
        headers = {}
        if form.validate_on_submit():
            # Counted before the password is checked: guesses sent at once are counted
            # all the same.
            wait = current_app.extensions["partsflow_pages"].sign_in_guard.attempt(form.name.data)
            user = (
                None
                if wait
                else service_context().users.by_password(form.name.data, form.password.data)
            )
            if user is not None:
                sign_in(user)
                remember_offset(form.utc_offset.data or "")
                return redirect(target)
            if wait:
                form.form_errors.append(
                    f"Too many sign-ins for this name: try again in {wait} seconds."
                )
                form.refused_status = 429
                headers["Retry-After"] = str(wait)
            else:
                form.form_errors.append("Wrong name or password.")
                form.refused_status = 401
        return (
            render_template(
                "pages/login.html",
                form=form,
                next=target,
                link_unusable=request.args.get("link") == "unusable",
            ),
            form.status_code,
            headers,
        )

    @account.route("/logout", methods=["GET", "POST"])
    def logout() -> Any:
        if request.method == "POST":
            sign_out()
            flash("You are signed out.", "success")
            return redirect("/login")
        return render_template("pages/logout.html")

    @account.post("/preferences/time-zone")
    def time_zone() -> Any:
        form = OffsetForm()
        if form.validate_on_submit():
            remember_offset(form.utc_offset.data)
        return redirect(local_path(request.args.get("next")))

    return account
