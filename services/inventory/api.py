"""Inventory's JSON API under ``/inventory/api/v1``: parse, call one use case, render."""

from __future__ import annotations

from typing import Any

from flask.views import MethodView
from flask_smorest import Page

from services.inventory import schemas
from services.inventory.service import Inventory
from shared.auth import MANAGE_STOCK, READ, RESERVE
from shared.web import ApiBlueprint, ProblemSchema, current_user, requires, service_context

PREFIX = "/inventory/api/v1"

warehouses = ApiBlueprint(
    "warehouses",
    __name__,
    url_prefix=f"{PREFIX}/warehouses",
    description="Stock locations: central warehouses, depots, vans",
)
parts = ApiBlueprint(
    "parts", __name__, url_prefix=f"{PREFIX}/parts", description="The parts catalogue"
)
stock = ApiBlueprint(
    "stock", __name__, url_prefix=PREFIX, description="Receipts, adjustments, stock"
)
reservations = ApiBlueprint(
    "reservations",
    __name__,
    url_prefix=f"{PREFIX}/reservations",
    description="Parts promised to service jobs",
)
ledger = ApiBlueprint(
    "ledger", __name__, url_prefix=PREFIX, description="The movement ledger and serial units"
)

BLUEPRINTS = (warehouses, parts, stock, reservations, ledger)


def inventory() -> Inventory:
    return service_context().extras["inventory"]


def _paged(page: Any, pagination_parameters: Any) -> list[dict[str, Any]]:
    pagination_parameters.item_count = page.total
    return page.items


@warehouses.route("")
class Warehouses(MethodView):
    @requires(READ)
    @warehouses.response(200, schemas.WarehouseOut(many=True))
    @warehouses.paginate(Page)
    def get(self) -> Any:
        return inventory().list_warehouses()

    @requires(MANAGE_STOCK)
    @warehouses.arguments(schemas.WarehouseIn)
    @warehouses.response(201, schemas.WarehouseOut)
    @warehouses.alt_response(409, schema=ProblemSchema, description="The code is taken")
    def post(self, data: dict[str, Any]) -> Any:
        return inventory().create_warehouse(data)


@warehouses.route("/<path:code>")
class WarehouseByCode(MethodView):
    @requires(READ)
    @warehouses.response(200, schemas.WarehouseOut)
    def get(self, code: str) -> Any:
        return inventory().get_warehouse(code)

    @requires(MANAGE_STOCK)
    @warehouses.arguments(schemas.WarehousePatch)
    @warehouses.response(200, schemas.WarehouseOut)
    def patch(self, changes: dict[str, Any], code: str) -> Any:
        return inventory().update_warehouse(code, changes)


@parts.route("")
class Parts(MethodView):
    @requires(READ)
    @parts.response(200, schemas.PartOut(many=True))
    @parts.paginate(Page)
    def get(self) -> Any:
        return inventory().list_parts()

    @requires(MANAGE_STOCK)
    @parts.arguments(schemas.PartIn)
    @parts.response(201, schemas.PartOut)
    @parts.alt_response(409, schema=ProblemSchema, description="The part number is taken")
    def post(self, data: dict[str, Any]) -> Any:
        return inventory().create_part(data)


@parts.route("/<path:part_number>")
class PartByNumber(MethodView):
    @requires(READ)
    @parts.response(200, schemas.PartOut)
    def get(self, part_number: str) -> Any:
        return inventory().get_part(part_number)

    @requires(MANAGE_STOCK)
    @parts.arguments(schemas.PartPatch)
    @parts.response(200, schemas.PartOut)
    def patch(self, changes: dict[str, Any], part_number: str) -> Any:
        return inventory().update_part(part_number, changes)


@stock.route("/receipts")
class Receipts(MethodView):
    @requires(MANAGE_STOCK)
    @stock.arguments(schemas.ReceiptIn)
    @stock.response(201, schemas.ReceiptOut)
    @stock.alt_response(409, schema=ProblemSchema, description="A serial number is known already")
    def post(self, data: dict[str, Any]) -> Any:
        return inventory().receive_stock(data, actor=current_user().name)


@stock.route("/adjustments")
class Adjustments(MethodView):
    @requires(MANAGE_STOCK)
    @stock.arguments(schemas.AdjustmentIn)
    @stock.response(201, schemas.AdjustmentOut)
    @stock.alt_response(409, schema=ProblemSchema, description="Below reserved or below zero")
    def post(self, data: dict[str, Any]) -> Any:
        return inventory().adjust_stock(data, actor=current_user().name)


@stock.route("/stock")
class StockLevels(MethodView):
    @requires(READ)
    @stock.arguments(schemas.StockQuery, location="query")
    @stock.response(200, schemas.StockOut(many=True))
    @stock.paginate()
    def get(self, query: dict[str, Any], pagination_parameters: Any) -> Any:
        page = inventory().list_stock(
            **query, page=pagination_parameters.page, page_size=pagination_parameters.page_size
        )
        return _paged(page, pagination_parameters)


@reservations.route("")
class Reservations(MethodView):
    @requires(READ)
    @reservations.arguments(schemas.ReservationQuery, location="query")
    @reservations.response(200, schemas.ReservationOut(many=True))
    @reservations.paginate()
    def get(self, query: dict[str, Any], pagination_parameters: Any) -> Any:
        page = inventory().list_reservations(
            **query, page=pagination_parameters.page, page_size=pagination_parameters.page_size
        )
        return _paged(page, pagination_parameters)

    @requires(RESERVE)
    @reservations.arguments(schemas.ReservationIn)
    @reservations.response(201, schemas.ReservationOut)
    @reservations.alt_response(
        409, schema=ProblemSchema, description="Not enough stock; alternatives are listed"
    )
    def post(self, data: dict[str, Any]) -> Any:
        return inventory().reserve_part(data, actor=current_user().name)


@reservations.route("/<reservation_id>")
class ReservationById(MethodView):
    @requires(READ)
    @reservations.response(200, schemas.ReservationOut)
    def get(self, reservation_id: str) -> Any:
        return inventory().get_reservation(reservation_id)


@reservations.route("/<reservation_id>/release")
class ReleaseReservation(MethodView):
    @requires(RESERVE)
    @reservations.arguments(schemas.ReleaseIn)
    @reservations.response(200, schemas.ReservationOut)
    @reservations.alt_response(409, schema=ProblemSchema, description="Not confirmed")
    def post(self, data: dict[str, Any], reservation_id: str) -> Any:
        return inventory().release_reservation(
            reservation_id, data.get("reason"), actor=current_user().name
        )


@ledger.route("/movements")
class Movements(MethodView):
    @requires(READ)
    @ledger.arguments(schemas.MovementQuery, location="query")
    @ledger.response(200, schemas.MovementOut(many=True))
    @ledger.paginate()
    def get(self, query: dict[str, Any], pagination_parameters: Any) -> Any:
        page = inventory().list_movements(
            **query, page=pagination_parameters.page, page_size=pagination_parameters.page_size
        )
        return _paged(page, pagination_parameters)


@ledger.route("/units/<path:serial>")
class UnitBySerial(MethodView):
    @requires(READ)
    @ledger.response(200, schemas.UnitOut)
    def get(self, serial: str) -> Any:
        return inventory().get_unit(serial)
