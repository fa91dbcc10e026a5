"""Two relays and two consumers per service at once, and one of inventory's workers
killed in the middle of a batch."""

from __future__ import annotations

import threading
import time

import pytest
from sqlalchemy import select

from services.inventory.models import Reservation
from tests.conftest import wait_until
from tests.faults.checker import History, assert_exactly_once, reservation_states
from tests.faults.conftest import CONFIRMED, CommandPublisher, Lab, reserve_command

pytestmark = [pytest.mark.faults, pytest.mark.xdist_group("faults")]
RELEASED = "inventory.reservation.released"
COMMANDS = 300


@pytest.mark.timeout(240)
class TestCompetingWorkers:
    def test_one_of_two_workers_killed_mid_batch_loses_nothing_and_keeps_order(
        self, lab: Lab
    ) -> None:
        lab.receive("GEL-250", "CDU", 2 * COMMANDS)
        lab.watcher_worker(threads=2)
        lab.watcher_worker(threads=2)
        doomed = lab.spawn_inventory_worker("worker-a")
        lab.spawn_inventory_worker("worker-b")
        lab.wait_for_consumers("inventory.commands", 2)
        lab.wait_for_consumers("watcher.events", 2)

        reserves, releases = History(), History()
        reserving = CommandPublisher(lab.settings.broker_url, lab.prefix, reserves)
        releasing = CommandPublisher(lab.settings.broker_url, lab.prefix, releases)
        done = threading.Event()

        def reserve_all() -> None:
            for i in range(COMMANDS):
                job_id = f"M-{i}"
                reserving.send("inventory.reserve", reserve_command(job_id), job_id)
                if i % 10 == 0:  # a client that repeats itself
                    reserving.send("inventory.reserve", reserve_command(job_id), job_id)

        def release_every_other() -> None:
            """As soon as an even job's reservation exists, release it: its ``released``
            event (version 2) chases the ``confirmed`` one (version 1)."""
            sent: set[str] = set()
            give_up = time.monotonic() + 180
            while (not done.is_set() or len(sent) < COMMANDS // 2) and time.monotonic() < give_up:
                with lab.inventory.db.reading() as session:
                    rows = session.execute(
                        select(Reservation.job_id, Reservation.id).where(
                            Reservation.job_id.startswith("M-")
                        )
                    ).all()
                for job_id, reservation_id in rows:
                    if int(job_id[2:]) % 2 == 0 and job_id not in sent:
                        releasing.send(
                            "inventory.release",
                            {"reservation_id": reservation_id, "reason": "job closed"},
                            f"release-{job_id}",
                        )
                        sent.add(job_id)
                time.sleep(0.05)

        traffic = [
            threading.Thread(target=reserve_all),
            threading.Thread(target=release_every_other),
        ]
        for thread in traffic:
            thread.start()
        try:
            wait_until(
                lambda: len(reservation_states(lab.inventory)) >= COMMANDS // 3,
                timeout=90,
                message="a third of the reservations",
            )
            doomed.kill()
            traffic[0].join(timeout=120)
        finally:
            done.set()
            traffic[1].join(timeout=120)
            reserving.close()
            releasing.close()

        assert len(reserves.acknowledged_keys) == COMMANDS
        assert len(releases.acknowledged_keys) == COMMANDS // 2
        released = History()
        released.extend(key.removeprefix("release-") for key in releases.acknowledged_keys)
        lab.assert_every_job_once(reserves, "M-")
        lab.settle(
            lambda: released.acknowledged_keys - set(lab.watcher.effects_per_job(RELEASED)),
            "released downstream",
        )
        assert_exactly_once(released, lab.watcher.effects_per_job(RELEASED), "releases")
        assert_exactly_once(reserves, lab.watcher.effects_per_job(CONFIRMED), "confirmations")

        # Per reservation, the read model ends where inventory is: the order was kept,
        # or the stale version that came late was refused.
        inventory_states = reservation_states(lab.inventory)
        assert {status for status, _ in inventory_states.values()} == {"confirmed", "released"}
        lab.settle(
            lambda: {
                rid
                for rid, state in inventory_states.items()
                if lab.watcher.states().get(rid) != state
            },
            "in the same state downstream",
        )
        assert set(lab.watcher.states()) == set(inventory_states)
        lab.assert_nothing_dead()
