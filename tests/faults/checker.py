"""What the fault tests conclude, in the manner of Jepsen's queue checker.

A test records every business id it submitted (a reservation's ``job_id``, a
command's id) with what the system answered: *acknowledged* (201, a publisher
confirm) or *indeterminate* (the connection broke before the answer, so it may or may
not have been taken). At the end it counts, per business id, the effects found in the
system (reservation rows, events applied downstream), and each id is classified:

* ``ok``: acknowledged and found exactly once (or indeterminate and found once);
* ``lost``: acknowledged and never found;
* ``duplicated``: found more than once;
* ``unexpected``: found, though nobody asked for it.

Lost, duplicated and unexpected must all be empty. Next to it, the ledger's own
invariants: every stock row equals the sums of its movements, 0 <= reserved <= on_hand,
reserved equals what the active reservations hold, and no serial unit is in two
active reservations.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from sqlalchemy import func, select

from services.inventory.models import Part, Reservation, ReservationUnit, Stock, Warehouse
from services.inventory.service import Inventory

ACTIVE = ("confirmed",)


class History:
    """Every business id a test submitted, and what the system answered."""

    def __init__(self) -> None:
        self._answers: dict[str, bool] = {}
        self._lock = threading.Lock()

    def acknowledged(self, key: str) -> None:
        with self._lock:
            self._answers[key] = True

    def indeterminate(self, key: str) -> None:
        with self._lock:
            self._answers.setdefault(key, False)

    def extend(self, keys: Iterable[str]) -> None:
        for key in keys:
            self.acknowledged(key)

    @property
    def keys(self) -> set[str]:
        with self._lock:
            return set(self._answers)

    @property
    def acknowledged_keys(self) -> set[str]:
        with self._lock:
            return {key for key, acked in self._answers.items() if acked}

    def __len__(self) -> int:
        return len(self._answers)

    def check(self, effects: Mapping[str, int]) -> Verdict:
        with self._lock:
            answers = dict(self._answers)
        verdict = Verdict()
        for key, acked in answers.items():
            count = effects.get(key, 0)
            if count > 1:
                verdict.duplicated[key] = count
            elif count == 1:
                verdict.ok.add(key)
            elif acked:
                verdict.lost.add(key)
            else:
                verdict.not_taken.add(key)
        verdict.unexpected = {key for key, n in effects.items() if n and key not in answers}
        return verdict


@dataclass
class Verdict:
    ok: set[str] = field(default_factory=set)
    lost: set[str] = field(default_factory=set)
    duplicated: dict[str, int] = field(default_factory=dict)
    unexpected: set[str] = field(default_factory=set)
    # Indeterminate and without effect: allowed (the system never took it).
    not_taken: set[str] = field(default_factory=set)

    @property
    def valid(self) -> bool:
        return not (self.lost or self.duplicated or self.unexpected)

    def __str__(self) -> str:
        def some(keys: Iterable[str]) -> str:
            return ", ".join(sorted(keys)[:5])

        return (
            f"ok {len(self.ok)}, lost {len(self.lost)} [{some(self.lost)}], "
            f"duplicated {len(self.duplicated)} [{some(self.duplicated)}], "
            f"unexpected {len(self.unexpected)} [{some(self.unexpected)}], "
            f"not taken {len(self.not_taken)}"
        )


def assert_exactly_once(history: History, effects: Mapping[str, int], what: str) -> Verdict:
    verdict = history.check(effects)
    assert verdict.valid, f"{what}: {verdict}"
    return verdict


# -- effects in inventory ------------------------------------------------------------------


def reservations_per_job(inventory: Inventory, prefix: str = "") -> dict[str, int]:
    """Job id -> reservations inventory holds for it (in any status)."""
    with inventory.db.reading() as session:
        rows = session.execute(
            select(Reservation.job_id, func.count())
            .where(Reservation.job_id.startswith(prefix))
            .group_by(Reservation.job_id)
        ).all()
    return {job_id: count for job_id, count in rows}


def reservation_states(inventory: Inventory) -> dict[str, tuple[str, int]]:
    with inventory.db.reading() as session:
        rows = session.execute(
            select(Reservation.id, Reservation.status, Reservation.version)
        ).all()
    return {rid: (status, version) for rid, status, version in rows}


# -- the ledger ----------------------------------------------------------------------------


def ledger_problems(inventory: Inventory) -> list[str]:
    problems = []
    for row in inventory.ledger_balances():
        where = f"{row['part_number']} at {row['warehouse']}"
        if row["on_hand"] != row["ledger_on_hand"]:
            problems.append(f"{where}: on_hand {row['on_hand']} != ledger {row['ledger_on_hand']}")
        if row["reserved"] != row["ledger_reserved"]:
            problems.append(
                f"{where}: reserved {row['reserved']} != ledger {row['ledger_reserved']}"
            )
        if not 0 <= row["reserved"] <= row["on_hand"]:
            problems.append(f"{where}: reserved {row['reserved']} outside 0..{row['on_hand']}")
    with inventory.db.reading() as session:
        held = {
            (warehouse_id, part_id): int(quantity)
            for warehouse_id, part_id, quantity in session.execute(
                select(
                    Reservation.warehouse_id, Reservation.part_id, func.sum(Reservation.quantity)
                )
                .where(Reservation.status.in_(ACTIVE))
                .group_by(Reservation.warehouse_id, Reservation.part_id)
            )
        }
        stock = session.execute(
            select(
                Stock.warehouse_id, Stock.part_id, Stock.reserved, Warehouse.code, Part.part_number
            )
            .join(Warehouse, Warehouse.id == Stock.warehouse_id)
            .join(Part, Part.id == Stock.part_id)
        ).all()
        twice = (
            session.execute(
                select(ReservationUnit.serial)
                .join(Reservation, Reservation.id == ReservationUnit.reservation_id)
                .where(Reservation.status.in_(ACTIVE))
                .group_by(ReservationUnit.serial)
                .having(func.count() > 1)
            )
            .scalars()
            .all()
        )
    for warehouse_id, part_id, reserved, code, number in stock:
        promised = held.get((warehouse_id, part_id), 0)
        if reserved != promised:
            problems.append(
                f"{number} at {code}: reserved {reserved} but active reservations hold {promised}"
            )
    problems += [f"unit {serial} is in two active reservations" for serial in twice]
    return problems


def assert_ledger_balances(inventory: Inventory) -> None:
    problems = ledger_problems(inventory)
    assert problems == [], "\n".join(problems)
