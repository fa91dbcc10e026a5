"""What the benchmark reserves: many parts in many warehouses with ample stock, so
that concurrent reservations spread over many stock rows, and one hot part for the
scenario where they all want the same row."""

from __future__ import annotations

from dataclasses import dataclass

import services.inventory as inventory_service
from shared.config import Settings

REGIONS = ("north-plain", "river-delta", "east-coast", "west-basin", "south-hills")
SITE_REGION = "high-plateau"
ON_HAND = 1_000_000
HOT_PART = "HOT-1"


@dataclass(frozen=True)
class Catalogue:
    warehouses: tuple[str, ...]
    parts: tuple[str, ...]

    @classmethod
    def of_size(cls, warehouses: int, parts: int) -> Catalogue:
        return cls(
            tuple(f"W{i:02d}" for i in range(1, warehouses + 1)),
            tuple(f"BP-{i:04d}" for i in range(1, parts + 1)),
        )

    def region(self, warehouse: str) -> str:
        return REGIONS[self.warehouses.index(warehouse) % len(REGIONS)]

    def reserve_args(self, job_prefix: str) -> list[str]:
        """The Lua script's arguments for reservations spread over the catalogue."""
        return ["reserve", ",".join(self.warehouses), ",".join(self.parts), job_prefix, SITE_REGION]

    def reservation(self, job_id: str, warehouse: str, part_number: str) -> dict[str, object]:
        """A reservation body as the Lua script builds it."""
        return {
            "job_id": job_id,
            "part_number": part_number,
            "quantity": 1,
            "required_by": "2030-01-01T08:00:00+00:00",
            "priority": "routine",
            "owner": "bench",
            "site": {"name": "Bench county hospital", "region": SITE_REGION},
            "warehouse": warehouse,
        }


def hot_reserve_args(job_prefix: str) -> list[str]:
    return ["reserve", "W01", HOT_PART, job_prefix, SITE_REGION]


def seed(settings: Settings, catalogue: Catalogue, on_hand: int = ON_HAND) -> None:
    """Warehouses, parts and a receipt per stock row, through inventory's own use cases
    (so the ledger explains every number and every change is announced)."""
    inventory = inventory_service.open_service(settings)
    try:
        for code in catalogue.warehouses:
            inventory.create_warehouse(
                {
                    "code": code,
                    "name": f"Bench warehouse {code}",
                    "region": catalogue.region(code),
                    "kind": "central" if code == catalogue.warehouses[0] else "depot",
                }
            )
        for part_number in catalogue.parts:
            inventory.create_part(
                {
                    "part_number": part_number,
                    "description": f"Bench part {part_number}",
                    "serialized": False,
                }
            )
        for code in catalogue.warehouses:
            for part_number in catalogue.parts:
                inventory.receive_stock(
                    {
                        "warehouse": code,
                        "part_number": part_number,
                        "quantity": on_hand,
                        "reference": "bench opening stock",
                    }
                )
    finally:
        inventory.db.dispose()


def seed_hot_part(settings: Settings, on_hand: int) -> None:
    """One more part, stocked only at W01."""
    inventory = inventory_service.open_service(settings)
    try:
        inventory.create_part(
            {"part_number": HOT_PART, "description": "The part everyone wants", "serialized": False}
        )
        inventory.receive_stock(
            {"warehouse": "W01", "part_number": HOT_PART, "quantity": on_hand, "reference": "bench"}
        )
    finally:
        inventory.db.dispose()


def ledger_check(settings: Settings, part_number: str) -> dict[str, object]:
    """The stock rows of one part against what the ledger says they should be."""
    inventory = inventory_service.open_service(settings)
    try:
        rows = [r for r in inventory.ledger_balances() if r["part_number"] == part_number]
    finally:
        inventory.db.dispose()
    return {
        "rows": rows,
        "balanced": all(
            r["on_hand"] == r["ledger_on_hand"] and r["reserved"] == r["ledger_reserved"]
            for r in rows
        ),
    }
