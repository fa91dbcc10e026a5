"""Shipments' JSON API under ``/shipments/api/v1``: parse, call one use case, render."""

from __future__ import annotations

from typing import Any

from flask.views import MethodView

from services.shipments import schemas
from services.shipments.service import Shipments
from shared.auth import MANAGE_SHIPMENTS, READ
from shared.web import ApiBlueprint, ProblemSchema, current_user, requires, service_context

shipments = ApiBlueprint(
    "shipments",
    __name__,
    url_prefix="/shipments/api/v1/shipments",
    description="Movements of parts to sites and between warehouses",
)

BLUEPRINTS = (shipments,)


def service() -> Shipments:
    return service_context().extras["shipments"]


@shipments.route("")
class ShipmentList(MethodView):
    @requires(READ)
    @shipments.arguments(schemas.ShipmentQuery, location="query")
    @shipments.response(200, schemas.ShipmentOut(many=True))
    @shipments.paginate()
    def get(self, query: dict[str, Any], pagination_parameters: Any) -> Any:
        page = service().list_shipments(
            **query, page=pagination_parameters.page, page_size=pagination_parameters.page_size
        )
        pagination_parameters.item_count = page.total
        return page.items

    @requires(MANAGE_SHIPMENTS)
    @shipments.arguments(schemas.ShipmentIn)
    @shipments.response(201, schemas.ShipmentOut)
    @shipments.alt_response(
        404, schema=ProblemSchema, description="No such warehouse or reservation"
    )
    @shipments.alt_response(409, schema=ProblemSchema, description="A reservation is taken")
    def post(self, data: dict[str, Any]) -> Any:
        return service().create_shipment(data, actor=current_user().name, wait_for_news=True)


@shipments.route("/<shipment_id>")
class ShipmentById(MethodView):
    @requires(READ)
    @shipments.response(200, schemas.ShipmentOut)
    def get(self, shipment_id: str) -> Any:
        return service().get_shipment(shipment_id)


@shipments.route("/<shipment_id>/dispatch")
class Dispatch(MethodView):
    @requires(MANAGE_SHIPMENTS)
    @shipments.arguments(schemas.DispatchIn)
    @shipments.response(200, schemas.ShipmentOut)
    @shipments.alt_response(
        409,
        schema=ProblemSchema,
        description="Not planned, or the tracking number is on another open shipment",
    )
    def post(self, data: dict[str, Any], shipment_id: str) -> Any:
        return service().dispatch(shipment_id, data, actor=current_user().name)


@shipments.route("/<shipment_id>/deliver")
class Deliver(MethodView):
    @requires(MANAGE_SHIPMENTS)
    @shipments.arguments(schemas.DeliverIn)
    @shipments.response(200, schemas.ShipmentOut)
    @shipments.alt_response(409, schema=ProblemSchema, description="Not in transit")
    def post(self, data: dict[str, Any], shipment_id: str) -> Any:
        return service().deliver(shipment_id, data, actor=current_user().name)


@shipments.route("/<shipment_id>/cancel")
class Cancel(MethodView):
    @requires(MANAGE_SHIPMENTS)
    @shipments.arguments(schemas.CancelIn)
    @shipments.response(200, schemas.ShipmentOut)
    @shipments.alt_response(409, schema=ProblemSchema, description="Already dispatched")
    def post(self, data: dict[str, Any], shipment_id: str) -> Any:
        return service().cancel(shipment_id, data["reason"], actor=current_user().name)
