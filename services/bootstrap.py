"""The composition root's wiring: which services exist, the bus topology they share,
and how a service's worker is put together. Only the command line and the embedded
system use it; the services never import each other."""

from __future__ import annotations

from types import ModuleType
from typing import Any

import services.inventory as inventory
import services.inventory.handlers as inventory_handlers
import services.shipments as shipments
import services.shipments.handlers as shipments_handlers
import services.tracking as tracking
import services.tracking.handlers as tracking_handlers
from shared.bus.consumer import Route, queue_specs
from shared.bus.topology import Topology
from shared.clock import Clock
from shared.config import Settings
from shared.worker import PeriodicJob, Worker

SERVICES: dict[str, ModuleType] = {
    "inventory": inventory,
    "shipments": shipments,
    "tracking": tracking,
}
# Each handlers module has ROUTES (routing key -> Route) and, if the service has
# scheduled work, periodic_jobs(service, settings).
HANDLERS: dict[str, ModuleType] = {
    "inventory": inventory_handlers,
    "shipments": shipments_handlers,
    "tracking": tracking_handlers,
}
ROUTES: dict[str, dict[str, Route]] = {name: module.ROUTES for name, module in HANDLERS.items()}


def bus_topology(settings: Settings) -> Topology:
    """Every service's queues: each worker declares all of them, so no event is
    routed to nowhere because its consumer has not started yet."""
    specs = [spec for name, routes in ROUTES.items() for spec in queue_specs(name, routes)]
    return Topology.from_settings(settings, specs)


def open_service(name: str, settings: Settings, clock: Clock | None = None) -> Any:
    return SERVICES[name].open_service(settings, clock)


def upgrade_databases(settings: Settings, names: list[str] | None = None) -> None:
    for name in names or list(SERVICES):
        SERVICES[name].upgrade_database(settings)


def create_worker(
    name: str, settings: Settings, *, service: Any = None, consumer_threads: int | None = None
) -> Worker:
    service = service or open_service(name, settings)
    periodic_jobs = getattr(HANDLERS[name], "periodic_jobs", None)
    periodic: list[PeriodicJob] = periodic_jobs(service, settings) if periodic_jobs else []
    return Worker(
        service=name,
        settings=settings,
        db=service.db,
        topology=bus_topology(settings),
        routes=ROUTES[name],
        target=service,
        periodic=periodic,
        consumer_threads=consumer_threads or settings.consumer_threads,
    )
