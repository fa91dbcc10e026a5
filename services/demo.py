"""Demo data for ``partsflow run --demo``: the warehouses, parts and stock of the X-ray
tube and TEE probe stories, and one user per role."""

from __future__ import annotations

import secrets
from typing import TYPE_CHECKING

from shared.auth import UserStore

if TYPE_CHECKING:
    from services.embedded import EmbeddedSystem

WAREHOUSES = [
    {
        "code": "SHA",
        "name": "Shanghai central warehouse",
        "region": "east-china",
        "kind": "central",
    },
    {"code": "CDU", "name": "Chengdu regional depot", "region": "sichuan", "kind": "depot"},
    {"code": "VAN-07", "name": "Engineer Li's van", "region": "sichuan", "kind": "van"},
    {"code": "URC", "name": "Urumqi depot", "region": "xinjiang", "kind": "depot"},
]
PARTS = [
    {
        "part_number": "XRT-2000",
        "description": "CT X-ray tube assembly",
        "serialized": True,
        "reorder_point": 2,
    },
    {
        "part_number": "TEE-P7",
        "description": "Paediatric TEE ultrasound probe",
        "serialized": True,
        "reorder_point": 1,
    },
    {
        "part_number": "GEL-250",
        "description": "Ultrasound gel, 250 ml",
        "serialized": False,
        "reorder_point": 20,
    },
    {
        "part_number": "FUSE-10A",
        "description": "Fuse 10 A, slow blow",
        "serialized": False,
        "reorder_point": 10,
    },
    {
        "part_number": "FLT-HEPA",
        "description": "Gantry cooling filter",
        "serialized": False,
        "reorder_point": 4,
    },
]
RECEIPTS = [
    ("SHA", "XRT-2000", ["XRT-S-1001", "XRT-S-1002", "XRT-S-1003"]),
    ("CDU", "XRT-2000", ["XRT-C-2001"]),
    ("SHA", "TEE-P7", ["TEE-S-0001"]),
    ("SHA", "GEL-250", 200),
    ("CDU", "GEL-250", 40),
    ("VAN-07", "GEL-250", 6),
    ("SHA", "FUSE-10A", 100),
    ("CDU", "FUSE-10A", 25),
    ("VAN-07", "FUSE-10A", 4),
    ("SHA", "FLT-HEPA", 12),
    ("URC", "FLT-HEPA", 3),
]
DEMO_USERS = [("admin", "admin"), ("dispatcher", "logistics"), ("engineer", "engineer")]


def load_demo(system: EmbeddedSystem) -> list[str]:
    """Load the demo data once (an existing catalogue is left alone); return what to
    tell the person who started it."""
    inventory = system.services["inventory"]
    lines: list[str] = []
    if not inventory.list_warehouses():
        for warehouse in WAREHOUSES:
            inventory.create_warehouse(warehouse)
        for part in PARTS:
            inventory.create_part(part)
        for warehouse, part_number, stock in RECEIPTS:
            if isinstance(stock, list):
                receipt = {"quantity": len(stock), "serials": stock}
            else:
                receipt = {"quantity": stock}
            inventory.receive_stock(
                {
                    "warehouse": warehouse,
                    "part_number": part_number,
                    "reference": "demo stock",
                    **receipt,
                }
            )
        lines.append("Demo data loaded: 4 warehouses, 5 parts, stock of each.")
    store = UserStore(system.settings.users_path)
    if not store.names():
        lines.append("Demo users (name / password / API token):")
        for name, role in DEMO_USERS:
            password = secrets.token_urlsafe(9)
            token = store.add(name, role, password)
            lines.append(f"  {name:<11} {password}  {token}   ({role})")
        lines.append(
            "These are shown once; add more with: "
            ".venv/bin/partsflow users add NAME --role ROLE --password"
        )
    else:
        lines.append(
            f"Users: {', '.join(store.names())} (passwords and tokens were shown when they "
            "were made); add one with: .venv/bin/partsflow users add NAME --role ROLE --password"
        )
    return lines
