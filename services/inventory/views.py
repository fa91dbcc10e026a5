"""Inventory's pages for logistics staff: stock across warehouses, receipts,
adjustments, reservations (with alternatives and preemption), the ledger and each
unit's history. Each view parses a form, calls one use case and renders."""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Any

from flask import Flask, flash, redirect, render_template, request, url_for
from marshmallow import ValidationError
from wtforms import (
    BooleanField,
    Form,
    IntegerField,
    SelectField,
    StringField,
    TextAreaField,
)
from wtforms.fields import DateField, DateTimeLocalField, FormField
from wtforms.validators import InputRequired, Optional

from services.inventory import schemas
from services.inventory.rules import PRIORITIES, WAREHOUSE_KINDS
from services.inventory.service import Inventory, ReservationRejected
from shared import pages
from shared.auth import MANAGE_STOCK, READ, RESERVE
from shared.contracts import name_key
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
RESERVATION_STATUSES = ("confirmed", "issued", "fulfilled", "released", "preempted", "lost")

blueprint = pages.page_blueprint("inventory_pages", __name__, url_prefix="/inventory")


def register(app: Flask) -> None:
    """Add this service's pages to its app."""
    pages.install(app, clock=service_context(app).extras["inventory"].clock)
    app.register_blueprint(blueprint)


def inventory() -> Inventory:
    return service_context().extras["inventory"]


# -- forms -----------------------------------------------------------------------------------


class WarehouseForm(PageForm):
    code = StringField("Code", validators=[InputRequired()])
    name = StringField("Name", validators=[InputRequired()])
    region = StringField("Region", validators=[InputRequired()])
    kind = SelectField("Kind", choices=pages.choices(WAREHOUSE_KINDS))

    def payload(self) -> dict[str, Any]:
        return {name: self[name].data for name in ("code", "name", "region", "kind")}


class PartForm(PageForm):
    part_number = StringField("Part number", validators=[InputRequired()])
    description = StringField("Description", validators=[InputRequired()])
    serialized = BooleanField("Serialized: each unit has its own serial number")
    reorder_point = IntegerField("Reorder point", validators=[Optional()])

    def payload(self) -> dict[str, Any]:
        return _present(
            part_number=self.part_number.data,
            description=self.description.data,
            serialized=bool(self.serialized.data),
            reorder_point=self.reorder_point.data,
        )


class ReceiptForm(PageForm):
    warehouse = SelectField("Warehouse", validators=[InputRequired()])
    part_number = StringField("Part number", validators=[InputRequired()])
    quantity = IntegerField("Quantity", validators=[InputRequired()])
    serials = TextAreaField("Serial numbers")
    reference = StringField("Reference", validators=[Optional()])

    def payload(self) -> dict[str, Any]:
        return _present(
            warehouse=self.warehouse.data,
            part_number=self.part_number.data,
            quantity=self.quantity.data,
            serials=pages.split_list(self.serials.data) or None,
            reference=self.reference.data,
        )


class AdjustmentForm(PageForm):
    warehouse = SelectField("Warehouse", validators=[InputRequired()])
    part_number = StringField("Part number", validators=[InputRequired()])
    delta = IntegerField("Change in count", validators=[InputRequired()])
    reason = StringField("Reason", validators=[InputRequired()])
    serials = TextAreaField("Serial numbers")

    def payload(self) -> dict[str, Any]:
        return _present(
            warehouse=self.warehouse.data,
            part_number=self.part_number.data,
            delta=self.delta.data,
            reason=self.reason.data,
            serials=pages.split_list(self.serials.data) or None,
        )


class SiteForm(Form):
    name = StringField("Site (hospital)", validators=[InputRequired()])
    region = StringField("Site region", validators=[InputRequired()])


class ReservationForm(PageForm):
    job_id = StringField("Job", validators=[InputRequired()])
    part_number = StringField("Part number", validators=[InputRequired()])
    quantity = IntegerField("Quantity", default=1, validators=[InputRequired()])
    priority = SelectField("Priority", choices=pages.choices(PRIORITIES))
    required_by = DateTimeLocalField(
        "Required by", format=pages.DATETIME_LOCAL, validators=[InputRequired()]
    )
    utc_offset = pages.offset_field()
    owner = StringField("Owner (who holds the job)", validators=[InputRequired()])
    site = FormField(SiteForm, separator=".")
    warehouse = SelectField("From warehouse", validators=[Optional()])

    def payload(self, preempt: list[str]) -> dict[str, Any]:
        return _present(
            job_id=self.job_id.data,
            part_number=self.part_number.data,
            quantity=self.quantity.data,
            priority=self.priority.data,
            required_by=pages.aware(self.required_by.data, self.utc_offset.data),
            owner=self.owner.data,
            site={"name": self.site.form["name"].data, "region": self.site.form.region.data},
            warehouse=self.warehouse.data,
            preempt=preempt or None,
        )


class ReleaseForm(PageForm):
    reason = StringField("Reason", validators=[Optional()])


def _present(**values: Any) -> dict[str, Any]:
    """The fields a person filled in: the API tells a missing field from an empty one."""
    return {k: v for k, v in values.items() if v is not None and v != ""}


def _warehouse_choices(blank: str) -> list[Any]:
    return pages.warehouse_choices(inventory().list_warehouses(), blank)


def _prefill(*names: str) -> dict[str, str] | None:
    """A fresh form filled from the link that led to it (``?part_number=XRT-2000``)."""
    if request.method != "GET":
        return None
    return {name: request.args[name] for name in names if request.args.get(name)}


def _filters(schema: Any, names: tuple[str, ...]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Query filters checked by the API's query schema: (what the use case takes,
    errors by field)."""
    raw = {name: request.args[name].strip() for name in names if request.args.get(name, "").strip()}
    try:
        return schema.load(raw), {}
    except ValidationError as error:
        return {}, dict(error.messages) if isinstance(error.messages, dict) else {}


# -- stock ------------------------------------------------------------------------------------


@blueprint.get("/")
@page_requires(READ)
def home() -> Any:
    return redirect(url_for(".stock"))


@blueprint.get("/stock")
@page_requires(READ)
def stock() -> Any:
    query, errors = _filters(schemas.StockQuery(), ("part_number", "warehouse"))
    number = page_number()
    page = inventory().list_stock(**query, page=number, page_size=PAGE_SIZE)
    descriptions = {p["part_number"]: p["description"] for p in inventory().list_parts()}
    return render_template(
        "inventory/stock.html",
        rows=page.items,
        total=page.total,
        page=number,
        total_pages=max(1, math.ceil(page.total / PAGE_SIZE)),
        low_total=inventory().count_low_stock(**query),
        args={k: request.args.get(k, "") for k in ("part_number", "warehouse")},
        errors=errors,
        descriptions=descriptions,
        warehouses=inventory().list_warehouses(),
    ), (200 if not errors else 422)


@blueprint.route("/receipts/new", methods=["GET", "POST"])
@page_requires(MANAGE_STOCK)
def receive() -> Any:
    form = ReceiptForm(data=_prefill("warehouse", "part_number"))
    form.warehouse.choices = _warehouse_choices("Choose a warehouse")
    if form.validate_on_submit():
        data = load_form(form, schemas.ReceiptIn(), form.payload())
        result = (
            carry_out(form, lambda: inventory().receive_stock(data, actor=page_actor()))
            if data
            else None
        )
        if result:
            level = result["stock"]
            serials = data.get("serials") or []
            return succeed(
                f"Received {data['quantity']} × {data['part_number']} at {data['warehouse']}"
                + (f" (serials {pages.named(serials)})" if serials else "")
                + f". On hand {level['on_hand']}, available {level['available']}.",
                url_for(".stock", part_number=data["part_number"], warehouse=data["warehouse"]),
            )
    return render_template(
        "inventory/receive.html", form=form, parts=inventory().list_parts()
    ), form.status_code


@blueprint.route("/adjustments/new", methods=["GET", "POST"])
@page_requires(MANAGE_STOCK)
def adjust() -> Any:
    form = AdjustmentForm(data=_prefill("warehouse", "part_number"))
    form.warehouse.choices = _warehouse_choices("Choose a warehouse")
    if form.validate_on_submit():
        data = load_form(form, schemas.AdjustmentIn(), form.payload())
        result = (
            carry_out(form, lambda: inventory().adjust_stock(data, actor=page_actor()))
            if data
            else None
        )
        if result:
            level = result["stock"]
            serials = result["serials"]
            return succeed(
                f"Adjusted {data['part_number']} at {data['warehouse']} by {data['delta']:+d} "
                f"({data['reason']}"
                + (f"; serials {pages.named(serials)}" if serials else "")
                + f"). On hand {level['on_hand']}, "
                f"available {level['available']}.",
                url_for(".stock", part_number=data["part_number"], warehouse=data["warehouse"]),
            )
    return render_template(
        "inventory/adjust.html", form=form, parts=inventory().list_parts()
    ), form.status_code


# -- warehouses and parts --------------------------------------------------------------------


@blueprint.get("/warehouses")
@page_requires(READ)
def warehouses() -> Any:
    return _warehouses_page(WarehouseForm(formdata=None))


@blueprint.post("/warehouses")
@page_requires(MANAGE_STOCK)
def add_warehouse() -> Any:
    form = WarehouseForm()
    if form.validate_on_submit():
        data = load_form(form, schemas.WarehouseIn(), form.payload())
        created = carry_out(form, lambda: inventory().create_warehouse(data)) if data else None
        if created:
            return succeed(
                f"Warehouse {created['code']} ({created['name']}) added.", url_for(".warehouses")
            )
    return _warehouses_page(form)


def _warehouses_page(form: WarehouseForm) -> Any:
    return render_template(
        "inventory/warehouses.html", form=form, warehouses=inventory().list_warehouses()
    ), form.status_code


@blueprint.get("/parts")
@page_requires(READ)
def parts() -> Any:
    return _parts_page(PartForm(formdata=None))


@blueprint.post("/parts")
@page_requires(MANAGE_STOCK)
def add_part() -> Any:
    form = PartForm()
    if form.validate_on_submit():
        data = load_form(form, schemas.PartIn(), form.payload())
        created = carry_out(form, lambda: inventory().create_part(data)) if data else None
        if created:
            return succeed(
                f"Part {created['part_number']} ({created['description']}) added.",
                url_for(".parts"),
            )
    return _parts_page(form)


def _parts_page(form: PartForm) -> Any:
    return render_template(
        "inventory/parts.html", form=form, parts=inventory().list_parts()
    ), form.status_code


# -- reservations ------------------------------------------------------------------------------


@blueprint.get("/reservations")
@page_requires(READ)
def reservations() -> Any:
    query, errors = _filters(schemas.ReservationQuery(), ("job_id", "status", "part_number"))
    number = page_number()
    page = inventory().list_reservations(**query, page=number, page_size=PAGE_SIZE)
    return render_template(
        "inventory/reservations.html",
        rows=page.items,
        total=page.total,
        page=number,
        total_pages=max(1, math.ceil(page.total / PAGE_SIZE)),
        args={k: request.args.get(k, "") for k in ("job_id", "status", "part_number")},
        statuses=RESERVATION_STATUSES,
        errors=errors,
    ), (200 if not errors else 422)


@blueprint.route("/reservations/new", methods=["GET", "POST"])
@page_requires(RESERVE)
def reserve() -> Any:
    form = ReservationForm(data=_prefill("job_id", "part_number", "warehouse"))
    pages.form_defaults(form)
    form.warehouse.choices = _warehouse_choices("Any: the earliest arrival")
    preempt = request.form.getlist("preempt")
    if form.is_submitted() and request.form.get("use_warehouse"):
        # A button of the alternatives offered after a refusal: reserve from there.
        form.warehouse.data = request.form["use_warehouse"]
        preempt = []
    elif preempt:
        # The reservations taken say where the part comes from: the warehouse first
        # chosen (which had none) would refuse them.
        form.warehouse.data = ""
    required_by = None  # the refusal's alternatives are weighed against it
    if form.validate_on_submit():
        data = load_form(form, schemas.ReservationIn(), form.payload(preempt))
        required_by = data["required_by"] if data else None
        reservation = (
            carry_out(form, lambda: inventory().reserve_part(data, actor=page_actor()))
            if data
            else None
        )
        if reservation:
            pages.remember_offset(form.utc_offset.data)
            serials = reservation["serials"]
            taken = ""
            if data.get("preempt"):
                jobs = [inventory().get_reservation(i)["job_id"] for i in data["preempt"]]
                taken = f"; it takes the reservation of {', '.join(jobs)}"
            notes = _job_notes(reservation)
            reserved = succeed(
                f"Reserved {reservation['quantity']} × {reservation['part_number']} at "
                f"{reservation['warehouse']} for {reservation['job_id']}"
                + (f" (serials {pages.named(serials)})" if serials else "")
                + taken
                + ".",
                url_for(".reservation", reservation_id=reservation["id"]),
            )
            for note in notes:
                flash(note, "info")
            return reserved
    rejection = form.problem if isinstance(form.problem, ReservationRejected) else None
    if rejection and request.form.get("action") == "preempt" and not preempt:
        form.form_errors.append("Nothing was taken: check the reservations to take first.")
    alternatives = rejection.extra.get("alternatives", []) if rejection else []
    return render_template(
        "inventory/reserve.html",
        too_late={
            alt["warehouse"]
            for alt in alternatives
            if required_by and pages.as_datetime(alt["estimated_arrival"]) > required_by
        },
        form=form,
        parts=inventory().list_parts(),
        alternatives=alternatives,
        preemptible=rejection.extra.get("preemptible", []) if rejection else [],
        preempt=preempt,
    ), form.status_code


def _job_notes(reservation: dict[str, Any]) -> list[str]:
    """What a new reservation changed of its job that the one reserving may not have
    meant: a site none of the job's other parts go to, or an owner none of them names
    (the job is handed over: its alerts go to the new one)."""
    others = [
        r
        for r in inventory().list_reservations(job_id=reservation["job_id"]).items
        if r["id"] != reservation["id"] and r["status"] in ("confirmed", "issued")
    ]
    if not others:
        return []
    job, site = reservation["job_id"], reservation["site"]
    notes = []
    sites = {_site_key(r["site"]): r["site"] for r in others}
    if _site_key(site) not in sites:
        before = ", ".join(f"{s['name']} ({s['region']})" for s in sites.values())
        notes.append(
            f"{job}'s other parts go to {before}; this one goes to {site['name']} "
            f"({site['region']})."
        )
    owners = {name_key(r["owner"]): r["owner"] for r in others}
    if name_key(reservation["owner"]) not in owners:
        notes.append(
            f"{job} is now held by {reservation['owner']} (before: "
            f"{', '.join(owners.values())}); its alerts go to them."
        )
    return notes


def _site_key(site: dict[str, str]) -> tuple[str, str]:
    return name_key(site["name"]), name_key(site["region"])


@blueprint.get("/reservations/<reservation_id>")
@page_requires(READ)
def reservation(reservation_id: str) -> Any:
    return render_template(
        "inventory/reservation.html",
        reservation=inventory().get_reservation(reservation_id),
        form=ReleaseForm(formdata=None),
    )


@blueprint.get("/reservations/<reservation_id>/release")
@page_requires(READ)
def release_reloaded(reservation_id: str) -> Any:
    """The address a refused release was sent to, opened again: the reservation's page,
    where the form is."""
    return redirect(url_for(".reservation", reservation_id=reservation_id))


@blueprint.post("/reservations/<reservation_id>/release")
@page_requires(RESERVE)
def release(reservation_id: str) -> Any:
    form = ReleaseForm()
    if form.validate_on_submit():
        data = load_form(form, schemas.ReleaseIn(), _present(reason=form.reason.data))
        released = (
            carry_out(
                form,
                lambda: inventory().release_reservation(
                    reservation_id, data.get("reason"), actor=page_actor()
                ),
            )
            if data is not None
            else None
        )
        if released:
            return succeed(
                f"Released {released['quantity']} × {released['part_number']} at "
                f"{released['warehouse']}; the stock is available again.",
                url_for(".reservation", reservation_id=reservation_id),
            )
    return render_template(
        "inventory/reservation.html",
        reservation=inventory().get_reservation(reservation_id),
        form=form,
    ), form.status_code


# -- the ledger and units ----------------------------------------------------------------------


class LedgerFilter(Form):
    since = DateField("Since (UTC date)", validators=[Optional()])


@blueprint.get("/movements")
@page_requires(READ)
def movements() -> Any:
    query, errors = _filters(schemas.StockQuery(), ("part_number", "warehouse"))
    since_form = LedgerFilter(request.args)
    since = None
    if since_form.validate() and since_form.since.data:
        since = datetime.combine(since_form.since.data, datetime.min.time(), UTC)
    errors.update({name: list(messages) for name, messages in since_form.errors.items()})
    number = page_number()
    page = inventory().list_movements(**query, since=since, page=number, page_size=PAGE_SIZE)
    return render_template(
        "inventory/movements.html",
        rows=page.items,
        total=page.total,
        page=number,
        total_pages=max(1, math.ceil(page.total / PAGE_SIZE)),
        args={k: request.args.get(k, "") for k in ("part_number", "warehouse", "since")},
        errors=errors,
        warehouses=inventory().list_warehouses(),
    ), (200 if not errors else 422)


@blueprint.get("/units")
@page_requires(READ)
def find_unit() -> Any:
    serial = request.args.get("serial", "").strip()
    if serial:
        return redirect(url_for(".unit", serial=serial))
    return render_template("inventory/find_unit.html")


@blueprint.get("/units/<path:serial>")
@page_requires(READ)
def unit(serial: str) -> Any:
    return render_template("inventory/unit.html", unit=inventory().get_unit(serial))
