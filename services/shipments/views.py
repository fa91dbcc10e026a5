"""Shipments' pages for logistics staff: the list and each shipment, planning one by
hand, dispatching it (by carrier, courier or hand-carry with its checkpoints),
marking it delivered, cancelling it. Each view parses a form, calls one use case
and renders."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from flask import Flask, flash, redirect, render_template, request, url_for
from marshmallow import ValidationError
from wtforms import Form, IntegerField, SelectChoice, SelectField, StringField
from wtforms.fields import DateTimeLocalField, FieldList, FormField
from wtforms.validators import InputRequired, Optional

from services.shipments import schemas
from services.shipments.service import Shipments
from services.shipments.states import MODES, STATUSES
from shared import pages
from shared.auth import MANAGE_SHIPMENTS, READ
from shared.pages import (
    PageForm,
    carry_out,
    load_form,
    page_actor,
    page_number,
    page_requires,
    succeed,
)
from shared.web import service_context

PAGE_SIZE = 50
MORE_ROWS = 4
MODE_CHOICES = [SelectChoice(mode, mode.replace("_", "-")) for mode in MODES]

blueprint = pages.page_blueprint("shipments_pages", __name__, url_prefix="/shipments")


def register(app: Flask) -> None:
    """Add this service's pages to its app."""
    pages.install(app, clock=service_context(app).extras["shipments"].clock)
    app.register_blueprint(blueprint)


def shipments() -> Shipments:
    return service_context().extras["shipments"]


# -- forms -----------------------------------------------------------------------------------


class LineForm(Form):
    part_number = StringField("Part number")
    quantity = IntegerField("Quantity", validators=[Optional()])
    reservation_id = StringField("Reservation")
    serials = StringField("Serials")


class DestinationForm(Form):
    site = StringField("Site (hospital)")
    region = StringField("Site region")
    warehouse = SelectField("Or another warehouse", validators=[Optional()])


class PlanForm(PageForm):
    origin = SelectField("From warehouse", validators=[InputRequired()])
    destination = FormField(DestinationForm, separator=".")
    mode = SelectField("Mode", choices=MODE_CHOICES)
    job_id = StringField("Job", validators=[Optional()])
    required_by = DateTimeLocalField(
        "Required by", format=pages.DATETIME_LOCAL, validators=[Optional()]
    )
    utc_offset = pages.offset_field()
    lines = FieldList(FormField(LineForm, separator="."), separator=".", min_entries=3)

    def payload(self) -> tuple[dict[str, Any], list[int]]:
        rows, kept = _filled_rows(self.lines)
        destination = self.destination.form
        return _present(
            origin=self.origin.data,
            destination=_present(
                site=destination.site.data,
                region=destination.region.data,
                warehouse=destination.warehouse.data,
            ),
            mode=self.mode.data,
            lines=[
                _present(**{**row, "serials": pages.split_list(row["serials"]) or None})
                for row in rows
            ],
            job_id=self.job_id.data,
            required_by=_aware_or_none(self.required_by.data, self.utc_offset.data),
        ), kept


class CheckpointForm(Form):
    name = StringField("Checkpoint")
    due_at = DateTimeLocalField("Due by", format=pages.DATETIME_LOCAL, validators=[Optional()])


class DispatchForm(PageForm):
    mode = SelectField("Mode", choices=MODE_CHOICES)
    carrier = StringField("Carrier")
    tracking_number = StringField("Tracking number", validators=[Optional()])
    promised_delivery_at = DateTimeLocalField(
        "Promised delivery", format=pages.DATETIME_LOCAL, validators=[Optional()]
    )
    dispatched_at = DateTimeLocalField(
        "Dispatched at", format=pages.DATETIME_LOCAL, validators=[Optional()]
    )
    utc_offset = pages.offset_field()
    checkpoints = FieldList(
        FormField(CheckpointForm, separator="."), separator=".", min_entries=MORE_ROWS
    )

    def payload(self) -> tuple[dict[str, Any], list[int]]:
        offset = self.utc_offset.data
        rows, kept = _filled_rows(self.checkpoints)
        return _present(
            mode=self.mode.data,
            carrier=self.carrier.data,
            tracking_number=self.tracking_number.data,
            promised_delivery_at=_aware_or_none(self.promised_delivery_at.data, offset),
            dispatched_at=_aware_or_none(self.dispatched_at.data, offset),
            checkpoints=[
                _present(name=row["name"], due_at=_aware_or_none(row["due_at"], offset))
                for row in rows
            ]
            or None,
        ), kept


class DeliverForm(PageForm):
    delivered_at = DateTimeLocalField(
        "Delivered at", format=pages.DATETIME_LOCAL, validators=[Optional()]
    )
    utc_offset = pages.offset_field()
    received_by = StringField("Received by", validators=[Optional()])

    def payload(self) -> dict[str, Any]:
        return _present(
            delivered_at=_aware_or_none(self.delivered_at.data, self.utc_offset.data),
            received_by=self.received_by.data,
        )


class CancelForm(PageForm):
    reason = StringField("Reason", validators=[InputRequired()])


def _present(**values: Any) -> dict[str, Any]:
    """The fields a person filled in: the API tells a missing field from an empty one."""
    return {k: v for k, v in values.items() if v is not None and v != ""}


def _aware_or_none(local: Any, offset: str) -> str | None:
    return pages.aware(local, offset) if local is not None else None


def _filled_rows(rows: FieldList) -> tuple[list[dict[str, Any]], list[int]]:
    """The rows a person filled in (blank ones are spare), and where each one was."""
    filled: list[dict[str, Any]] = []
    kept: list[int] = []
    for index, entry in enumerate(rows.entries):
        data = entry.form.data
        if any(value not in (None, "") for value in data.values()):
            filled.append(data)
            kept.append(index)
    return filled, kept


def _rows_errors(errors: Mapping[str, Any], name: str, kept: list[int]) -> dict[str, Any]:
    """The schema numbers the filled rows; the form numbers every row."""
    nested = errors.get(name)
    if not isinstance(nested, Mapping):
        return dict(errors)
    moved = {kept[int(i)] if int(i) < len(kept) else i: v for i, v in nested.items()}
    return {**errors, name: moved}


def _load_rows(
    form: PageForm, schema: Any, payload: Mapping[str, Any], name: str, kept: list[int]
) -> Any:
    try:
        return schema.load(payload)
    except ValidationError as error:
        messages = error.messages if isinstance(error.messages, Mapping) else {"": error.messages}
        pages.add_errors(form, _rows_errors(messages, name, kept))
        form.refused_status = 422
        return None


def _more_rows(rows: FieldList) -> bool:
    """The form's "more rows" button: add empty rows and show the form again."""
    if request.form.get("more_rows") != rows.name:
        return False
    for _ in range(MORE_ROWS):
        rows.append_entry()
    return True


def _warehouse_choices(blank: str) -> list[Any]:
    return pages.warehouse_choices(shipments().list_warehouses(), blank)


# -- the list and one shipment -----------------------------------------------------------------


@blueprint.get("/")
@page_requires(READ)
def shipment_list() -> Any:
    names = ("status", "job_id", "reservation_id")
    raw = {n: request.args[n].strip() for n in names if request.args.get(n, "").strip()}
    errors: dict[str, Any] = {}
    try:
        query = schemas.ShipmentQuery().load(raw)
    except ValidationError as error:
        query, errors = {}, dict(error.messages) if isinstance(error.messages, dict) else {}
    number = page_number()
    page = shipments().list_shipments(**query, page=number, page_size=PAGE_SIZE)
    return render_template(
        "shipments/list.html",
        rows=page.items,
        total=page.total,
        page=number,
        total_pages=max(1, math.ceil(page.total / PAGE_SIZE)),
        args={n: request.args.get(n, "") for n in names},
        statuses=STATUSES,
        errors=errors,
    ), (200 if not errors else 422)


@blueprint.get("/<shipment_id>")
@page_requires(READ)
def shipment(shipment_id: str) -> Any:
    return _detail(shipment_id)


def _detail(
    shipment_id: str,
    *,
    deliver_form: DeliverForm | None = None,
    cancel_form: CancelForm | None = None,
) -> Any:
    deliver_form = deliver_form or DeliverForm(formdata=None)
    cancel_form = cancel_form or CancelForm(formdata=None)
    if not deliver_form.is_submitted():
        pages.form_defaults(deliver_form)
    failed = next((f for f in (deliver_form, cancel_form) if f.status_code != 200), None)
    return render_template(
        "shipments/detail.html",
        shipment=shipments().get_shipment(shipment_id),
        deliver_form=deliver_form,
        cancel_form=cancel_form,
        now=pages.page_now(),
    ), (failed.status_code if failed else 200)


# -- planning by hand ---------------------------------------------------------------------------


@blueprint.route("/new", methods=["GET", "POST"])
@page_requires(MANAGE_SHIPMENTS)
def plan() -> Any:
    prefill = (
        {n: request.args[n] for n in ("origin", "job_id") if request.args.get(n)}
        if request.method == "GET"
        else None
    )
    form = PlanForm(data=prefill)
    pages.form_defaults(form)
    form.origin.choices = _warehouse_choices("Choose a warehouse")
    form.destination.form.warehouse.choices = _warehouse_choices("None: to the site above")
    if not _more_rows(form.lines) and form.validate_on_submit():
        payload, kept = form.payload()
        data = _load_rows(form, schemas.ShipmentIn(), payload, "lines", kept)
        planned = (
            carry_out(
                form,
                lambda: shipments().create_shipment(data, actor=page_actor(), wait_for_news=True),
            )
            if data
            else None
        )
        if planned:
            pages.remember_offset(form.utc_offset.data)
            return succeed(
                f"Shipment planned from {planned['origin']}: "
                + ", ".join(f"{x['quantity']} × {x['part_number']}" for x in planned["lines"])
                + ".",
                url_for(".shipment", shipment_id=planned["id"]),
            )
    return render_template("shipments/plan.html", form=form), form.status_code


# -- dispatch, delivery, cancellation ----------------------------------------------------------


@blueprint.route("/<shipment_id>/dispatch", methods=["GET", "POST"])
@page_requires(MANAGE_SHIPMENTS)
def dispatch(shipment_id: str) -> Any:
    current = shipments().get_shipment(shipment_id)
    if request.method == "GET" and current["status"] != "planned":
        # A bookmark or the back button: nothing to fill in for a shipment under way.
        flash(
            f"This shipment is {current['status'].replace('_', ' ')}: only a planned "
            "shipment is dispatched.",
            "info",
        )
        return redirect(url_for(".shipment", shipment_id=shipment_id))
    form = DispatchForm(data={"mode": current["mode"]} if request.method == "GET" else None)
    pages.form_defaults(form)
    if not _more_rows(form.checkpoints) and form.validate_on_submit():
        payload, kept = form.payload()
        data = _load_rows(form, schemas.DispatchIn(), payload, "checkpoints", kept)
        dispatched = (
            carry_out(form, lambda: shipments().dispatch(shipment_id, data, actor=page_actor()))
            if data is not None
            else None
        )
        if dispatched:
            pages.remember_offset(form.utc_offset.data)
            count = len(dispatched["checkpoints"])
            how = dispatched["mode"].replace("_", "-")
            if dispatched["carrier"]:
                how += f" with {dispatched['carrier']}"
            return succeed(
                f"Dispatched {how}"
                + (f", {count} checkpoint{'s' if count != 1 else ''} to pass" if count else "")
                + ".",
                url_for(".shipment", shipment_id=shipment_id),
            )
    return render_template("shipments/dispatch.html", form=form, shipment=current), form.status_code


@blueprint.get("/<shipment_id>/deliver")
@blueprint.get("/<shipment_id>/cancel")
@page_requires(READ)
def shipment_form_reloaded(shipment_id: str) -> Any:
    """The address a refused delivery or cancellation was sent to, opened again (a
    reload, the back button): the shipment's page, where those forms are."""
    return redirect(url_for(".shipment", shipment_id=shipment_id))


@blueprint.post("/<shipment_id>/deliver")
@page_requires(MANAGE_SHIPMENTS)
def deliver(shipment_id: str) -> Any:
    form = DeliverForm()
    if form.validate_on_submit():
        data = load_form(form, schemas.DeliverIn(), form.payload())
        if data is not None and data.get("delivered_at"):
            data = _after_the_dispatch(form, shipment_id, data)
        delivered = (
            carry_out(form, lambda: shipments().deliver(shipment_id, data, actor=page_actor()))
            if data is not None
            else None
        )
        if delivered:
            return succeed(
                "Marked delivered"
                + (f", received by {delivered['received_by']}" if delivered["received_by"] else "")
                + ".",
                url_for(".shipment", shipment_id=shipment_id),
            )
    return _detail(shipment_id, deliver_form=form)


def _after_the_dispatch(
    form: DeliverForm, shipment_id: str, data: dict[str, Any]
) -> dict[str, Any] | None:
    """A delivery typed to the minute of the dispatch is at the dispatch (the form
    takes minutes); one typed before it is most likely in another zone than the one
    chosen beside it, and is refused in the reader's own words."""
    dispatched_at = pages.as_datetime(shipments().get_shipment(shipment_id)["dispatched_at"])
    if dispatched_at is None or data["delivered_at"] >= dispatched_at:
        return data
    if data["delivered_at"] >= dispatched_at.replace(second=0, microsecond=0):
        return {**data, "delivered_at": dispatched_at}
    when = pages.when_in_words(dispatched_at, form.utc_offset.data)
    pages.add_errors(
        form,
        {"delivered_at": [f"before the dispatch ({when}): check the time and the zone it is in"]},
    )
    form.refused_status = 422
    return None


@blueprint.post("/<shipment_id>/cancel")
@page_requires(MANAGE_SHIPMENTS)
def cancel(shipment_id: str) -> Any:
    form = CancelForm()
    if form.validate_on_submit():
        data = load_form(form, schemas.CancelIn(), {"reason": form.reason.data})
        cancelled = (
            carry_out(
                form, lambda: shipments().cancel(shipment_id, data["reason"], actor=page_actor())
            )
            if data
            else None
        )
        if cancelled:
            return succeed("Shipment cancelled.", url_for(".shipment", shipment_id=shipment_id))
    return _detail(shipment_id, cancel_form=form)
