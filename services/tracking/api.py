"""Tracking's JSON API under ``/tracking/api/v1``: parse, call one use case, render."""

from __future__ import annotations

from typing import Any

from flask.views import MethodView
from flask_smorest import Page

from services.tracking import schemas
from services.tracking.service import Tracking
from shared.auth import ACKNOWLEDGE_ALERTS, READ, RECORD_EVENTS
from shared.web import ApiBlueprint, ProblemSchema, current_user, requires, service_context

PREFIX = "/tracking/api/v1"

events = ApiBlueprint(
    "events", __name__, url_prefix=PREFIX, description="Scans and reports about shipments"
)
etas = ApiBlueprint("etas", __name__, url_prefix=PREFIX, description="When shipments arrive")
jobs = ApiBlueprint(
    "jobs", __name__, url_prefix=f"{PREFIX}/jobs", description="Service jobs and their parts"
)
alerts = ApiBlueprint(
    "alerts", __name__, url_prefix=f"{PREFIX}/alerts", description="What people must act on"
)

BLUEPRINTS = (events, etas, jobs, alerts)


def tracking() -> Tracking:
    return service_context().extras["tracking"]


@events.route("/events")
class Events(MethodView):
    @requires(RECORD_EVENTS)
    @events.arguments(schemas.EventIn)
    @events.response(201, schemas.EventOut)
    @events.alt_response(200, schema=schemas.EventOut, description="A repeat of event_id")
    @events.alt_response(404, schema=ProblemSchema, description="No such shipment")
    def post(self, data: dict[str, Any]) -> Any:
        event, created = tracking().record_event(
            data, source=current_user().name, wait_for_shipment=True
        )
        return event if created else (event, 200)


@events.route("/shipments/<shipment_id>/events")
class ShipmentEvents(MethodView):
    @requires(READ)
    @events.response(200, schemas.EventOut(many=True))
    @events.paginate(Page)
    def get(self, shipment_id: str) -> Any:
        return tracking().shipment_events(shipment_id, wait_for_shipment=True)


@etas.route("/shipments/<shipment_id>/eta")
class ShipmentEta(MethodView):
    @requires(READ)
    @etas.response(200, schemas.EtaOut)
    def get(self, shipment_id: str) -> Any:
        return tracking().shipment_eta(shipment_id, wait_for_shipment=True)


@jobs.route("")
class Jobs(MethodView):
    @requires(READ)
    @jobs.arguments(schemas.JobQuery, location="query")
    @jobs.response(200, schemas.JobOut(many=True))
    @jobs.paginate(Page)
    def get(self, query: dict[str, Any]) -> Any:
        return tracking().list_jobs(open_only=query["open"], owner=query.get("owner"))


@jobs.route("/<path:job_id>")
class JobById(MethodView):
    @requires(READ)
    @jobs.response(200, schemas.JobOut)
    def get(self, job_id: str) -> Any:
        return tracking().job_view(job_id, wait_for_job=True)


@alerts.route("")
class Alerts(MethodView):
    @requires(READ)
    @alerts.arguments(schemas.AlertQuery, location="query")
    @alerts.response(200, schemas.AlertOut(many=True))
    @alerts.paginate()
    def get(self, query: dict[str, Any], pagination_parameters: Any) -> Any:
        page = tracking().list_alerts(
            **query, page=pagination_parameters.page, page_size=pagination_parameters.page_size
        )
        pagination_parameters.item_count = page.total
        return page.items


@alerts.route("/<alert_id>")
class AlertById(MethodView):
    @requires(READ)
    @alerts.response(200, schemas.AlertOut)
    def get(self, alert_id: str) -> Any:
        return tracking().get_alert(alert_id)


@alerts.route("/<alert_id>/acknowledge")
class AcknowledgeAlert(MethodView):
    @requires(ACKNOWLEDGE_ALERTS)
    @alerts.arguments(schemas.AcknowledgeIn)
    @alerts.response(200, schemas.AlertOut)
    @alerts.alt_response(409, schema=ProblemSchema, description="The alert is resolved")
    def post(self, data: dict[str, Any], alert_id: str) -> Any:
        return tracking().acknowledge_alert(alert_id, data.get("note"), actor=current_user().name)
