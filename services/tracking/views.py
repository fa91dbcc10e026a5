"""Tracking's pages: the start page of the whole site (what needs attention now), the
control tower, checkpoint scans entered by hand, and the engineer's page for one job.
The site's ``/login`` and ``/logout`` live here too, since the site's root is this
app's. Each view parses a form, calls one use case and renders."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping
from contextlib import AbstractContextManager
from typing import Any

from flask import Flask, current_app, redirect, render_template, request, url_for
from itsdangerous import BadSignature, URLSafeTimedSerializer
from wtforms import SelectField, StringField, ValidationError
from wtforms.fields import DateTimeLocalField
from wtforms.validators import InputRequired, Optional

from services.tracking.alerts import SEVERITY_ORDER, severity
from services.tracking.eta import retold, times_told_in
from services.tracking.schemas import EventIn
from services.tracking.service import Tracking
from shared import pages
from shared.auth import ACKNOWLEDGE_ALERTS, MANAGE_SHIPMENTS, READ, RECORD_EVENTS
from shared.contracts import name_key
from shared.pages import PageForm, carry_out, page_actor, page_requires, page_user, succeed
from shared.web import service_context

EVENT_KINDS = (
    "checkpoint",
    "picked_up",
    "in_transit",
    "out_for_delivery",
    "delivered",
    "exception",
    "lost",
)
AT_RISK = ("at_risk", "late", "lost")
# How often the control tower and the engineer's page reload themselves.
REFRESH_SECONDS = 60
# A job link texted to an engineer opens that job's page without signing in, for
# as long as a repair takes.
JOB_LINK_DAYS = 14

blueprint = pages.page_blueprint("tracking_pages", __name__, url_prefix="/tracking")
root = pages.page_blueprint("site_root", __name__, url_prefix="")


def register(app: Flask) -> None:
    """Add this service's pages to its app."""
    pages.install(app, clock=service_context(app).extras["tracking"].clock)
    app.jinja_env.filters["alert_message"] = alert_message
    app.register_blueprint(pages.account_blueprint())
    app.register_blueprint(root)
    app.register_blueprint(blueprint)


def tracking() -> Tracking:
    return service_context().extras["tracking"]


def in_readers_zone() -> AbstractContextManager[None]:
    """Around reading what a page shows: the times inside its sentences (an ETA's
    reason) are told in the zone the page shows every other time in."""
    return times_told_in(pages.offset_zone(pages.display_offset()))


def alert_message(alert: Mapping[str, Any]) -> str:
    """An alert's message, written once in UTC, with its times in the reader's zone."""
    written_at = pages.as_datetime(alert["raised_at"])
    if written_at is None:
        return alert["message"]
    with in_readers_zone():
        return retold(alert["message"], written_at)


# -- forms -----------------------------------------------------------------------------------


class ScanForm(PageForm):
    kind = SelectField("What happened", choices=pages.choices(EVENT_KINDS))
    checkpoint = StringField("Checkpoint", validators=[Optional()])
    occurred_at = DateTimeLocalField(
        "When", format=pages.DATETIME_LOCAL, validators=[InputRequired()]
    )
    utc_offset = pages.offset_field()
    location = StringField("Location", validators=[Optional()])
    # No Optional(): it would end the checks of an empty note before validate_note.
    note = StringField("Note")

    def validate_note(self, field: StringField) -> None:
        # A loss written off by a slip of the list would write off stock and reserve a
        # replacement: entered by hand, it says who reported it.
        if self.kind.data == "lost" and not (field.data or "").strip():
            raise ValidationError("say who reported the loss, and where it was last seen")

    def payload(self, shipment_id: str) -> dict[str, Any]:
        values = {
            "shipment_id": shipment_id,
            "kind": self.kind.data,
            "occurred_at": pages.aware(self.occurred_at.data, self.utc_offset.data),
            "checkpoint": self.checkpoint.data,
            "location": self.location.data,
            "note": self.note.data,
        }
        return {k: v for k, v in values.items() if v not in (None, "")}


class AcknowledgeForm(PageForm):
    note = StringField("Note", validators=[Optional()])


# -- links an engineer can open ---------------------------------------------------------------


def _job_links() -> URLSafeTimedSerializer:
    return URLSafeTimedSerializer(current_app.secret_key, salt="partsflow-job-page")


def job_link(job_id: str) -> str:
    key = _job_links().dumps(job_id)
    return url_for("tracking_pages.job", job_id=job_id, key=key, _external=True)


def _link_opens(job_id: str, key: str | None) -> bool:
    if not key:
        return False
    try:
        signed = _job_links().loads(key, max_age=JOB_LINK_DAYS * 24 * 3600)
    except BadSignature:
        return False
    return signed == job_id


# -- the start page and the control tower ------------------------------------------------------


@root.get("/")
@page_requires(READ)
def attention() -> Any:
    with in_readers_zone():
        tower = tracking().control_tower()
    by_severity: dict[str, list[dict[str, Any]]] = defaultdict(list)
    low_stock = []
    for alert in tower["alerts"]:
        if alert["kind"] == "low_stock":
            low_stock.append(alert)
        else:
            by_severity[alert["severity"]].append(alert)
    jobs = [job for job in tower["jobs"] if job["risk"] in AT_RISK]
    # The open jobs the reader holds, first: an engineer's own parts without a search.
    reader = name_key(page_actor())
    mine = [job for job in tower["jobs"] if job["owner"] and name_key(job["owner"]) == reader]
    return render_template(
        "tracking/attention.html",
        alert_groups=[(level, by_severity[level]) for level in SEVERITY_ORDER],
        jobs=jobs,
        mine=mine,
        low_stock=low_stock,
        low_stock_severity=severity("low_stock"),
        acknowledge_form=AcknowledgeForm(formdata=None),
    )


@blueprint.get("/")
@page_requires(READ)
def home() -> Any:
    return redirect(url_for(".control_tower"))


@blueprint.get("/control-tower")
@page_requires(READ)
def control_tower() -> Any:
    with in_readers_zone():
        tower = tracking().control_tower()
    return render_template(
        "tracking/control_tower.html",
        jobs=tower["jobs"],
        alerts=tower["alerts"],
        acknowledge_form=AcknowledgeForm(formdata=None),
        refresh_seconds=REFRESH_SECONDS,
    )


@blueprint.get("/alerts/<alert_id>/acknowledge")
@page_requires(READ)
def acknowledge_reloaded(alert_id: str) -> Any:
    """The address an acknowledgement was sent to, opened again: the control tower,
    where the alerts are."""
    return redirect(url_for(".control_tower"))


@blueprint.post("/alerts/<alert_id>/acknowledge")
@page_requires(ACKNOWLEDGE_ALERTS)
def acknowledge(alert_id: str) -> Any:
    form = AcknowledgeForm()
    back = pages.local_path(request.args.get("next"), url_for(".control_tower"))
    if form.validate_on_submit():
        alert = carry_out(
            form, lambda: tracking().acknowledge_alert(alert_id, form.note.data, actor=page_actor())
        )
        if alert:
            return succeed(f"Acknowledged: {alert_message(alert)}", back)
    return render_template(
        "pages/error.html",
        title="Not acknowledged",
        message=" ".join(form.form_errors) or "The alert could not be acknowledged.",
    ), form.status_code


# -- scans entered by hand ---------------------------------------------------------------------


@blueprint.route("/shipments/<shipment_id>/scans/new", methods=["GET", "POST"])
@page_requires(RECORD_EVENTS)
def record_scan(shipment_id: str) -> Any:
    with in_readers_zone():
        eta = tracking().shipment_eta(shipment_id)
    # Offered first; one gone by unscanned can still be chosen by hand.
    ahead = next((c for c in eta["checkpoints"] if c["ahead"]), None)
    form = ScanForm(
        data={"checkpoint": ahead["name"] if ahead else None} if request.method == "GET" else None
    )
    pages.form_defaults(form)
    if request.method == "GET":
        form.occurred_at.data = pages.page_now().astimezone(pages.offset_zone(form.utc_offset.data))
    if form.validate_on_submit():
        data = pages.load_form(form, EventIn(), form.payload(shipment_id))
        if data and not _on_the_route(data.get("checkpoint"), eta["checkpoints"]):
            # Typed by hand, a name not on the route is most likely a slip: recorded, it
            # would leave the checkpoint meant unpassed and its alert open.
            route = ", ".join(c["name"] for c in eta["checkpoints"])
            pages.add_errors(
                form,
                {
                    "checkpoint": [
                        f"not a checkpoint of this route ({route}): choose one of them, "
                        "or give the place as the location"
                    ]
                },
            )
            form.refused_status = 422
            data = None
        dispatched_at = pages.as_datetime(eta.get("dispatched_at"))
        # The form takes minutes: a scan in the minute of the dispatch is after it.
        if (
            data
            and dispatched_at is not None
            and data["occurred_at"] < dispatched_at.replace(second=0, microsecond=0)
        ):
            # Most likely a time typed in another zone than the one chosen beside it:
            # recorded, it would pass a checkpoint hours before the part set off.
            when = pages.when_in_words(dispatched_at, form.utc_offset.data)
            pages.add_errors(
                form,
                {
                    "occurred_at": [
                        f"before the shipment was dispatched ({when}): check the time and the "
                        "zone it is in"
                    ]
                },
            )
            form.refused_status = 422
            data = None
        recorded = (
            carry_out(form, lambda: tracking().record_event(data, source=page_actor()))
            if data
            else None
        )
        if recorded:
            pages.remember_offset(form.utc_offset.data)
            where = f" at {data['checkpoint']}" if data.get("checkpoint") else ""
            return succeed(
                f"Recorded {data['kind'].replace('_', ' ')}{where}.",
                url_for(".shipment_scans", shipment_id=shipment_id),
            )
    return render_template(
        "tracking/scan.html", form=form, eta=eta, ahead=ahead, shipment_id=shipment_id
    ), form.status_code


def _on_the_route(name: str | None, checkpoints: list[dict[str, Any]]) -> bool:
    """A scan names no checkpoint, one of its route's, or any for a route unplanned."""
    return (
        not name
        or not checkpoints
        or any(name_key(c["name"]) == name_key(name) for c in checkpoints)
    )


@blueprint.get("/shipments/<shipment_id>")
@page_requires(READ)
def shipment_scans(shipment_id: str) -> Any:
    with in_readers_zone():
        eta = tracking().shipment_eta(shipment_id)
    return render_template("tracking/shipment.html", shipment_id=shipment_id, eta=eta)


# -- the engineer's page -----------------------------------------------------------------------


@blueprint.get("/jobs/<path:job_id>")
def job(job_id: str) -> Any:
    user = page_user()
    opened_by_link = _link_opens(job_id, request.args.get("key"))
    if user is None and not opened_by_link:
        # A link that no longer opens the page (expired, or cut short in the text)
        # is said to be so on the sign-in page.
        unusable = "&link=unusable" if request.args.get("key") else ""
        return redirect(pages.login_url(pages.request_target()) + unusable)
    if user is not None and not user.can(READ) and not opened_by_link:
        return pages.forbidden(user)
    with in_readers_zone():
        job = tracking().job_view(job_id, wait_for_job=True)
    return render_template(
        "tracking/job.html",
        job=job,
        # Those who send engineers their parts mint the link that opens the page
        # without signing in; a reader (or the engineer) does not hand out access.
        share_link=job_link(job_id) if user is not None and user.can(MANAGE_SHIPMENTS) else None,
        link_days=JOB_LINK_DAYS,
        # The engineer who came by the texted link chooses the zone of its times too.
        offer_time_zone=True,
        refresh_seconds=REFRESH_SECONDS,
        checked_at=pages.page_now(),
    )
