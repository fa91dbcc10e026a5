"""One hot part: many clients reserve the same part at the same warehouse.

First with stock for all of them: throughput and p99 on the one row. Then the stock is
adjusted down to a few units and the clients come again, so that most of them meet
empty shelves, and what must never happen is checked: an answer other than 201 or 409,
or a unit promised twice. The reservations, the stock row's ``reserved`` and the
ledger must agree, ``reserved`` stay within ``on_hand``, and every 201 have its
reservation (wrk stops with requests in flight: those may have been served without
wrk counting them, at most one per connection)."""

from __future__ import annotations

import json

from bench import wrk
from bench.catalogue import HOT_PART, ON_HAND, hot_reserve_args, ledger_check, seed_hot_part
from bench.client import Client
from bench.processes import wait_for
from bench.report import Outcome, Row, ms, per_second, verdict
from bench.stack import Run, Stack

INVENTORY = "/inventory/api/v1"


def _settled_stock(staff: Client) -> dict[str, int]:
    """The hot stock row once it stops changing."""
    previous: list[dict[str, int]] = []

    def unchanged() -> dict[str, int] | None:
        [stock] = staff.expect("GET", f"{INVENTORY}/stock?part_number={HOT_PART}")
        settled = stock if previous and previous[-1] == stock else None
        previous.append(stock)
        return settled

    return wait_for(unchanged, timeout=30, what="the hot stock row to settle")


def run(run: Run, outcome: Outcome) -> None:
    options = run.options
    stack = Stack(run, "hot", bus=False)
    try:
        seed_hot_part(stack.settings, ON_HAND)
        port = stack.web("inventory")
        url = f"http://127.0.0.1:{port}"
        token = run.tokens["service"]
        warmup = wrk.Load(options.threads, options.connections, options.warmup)
        wrk.run(url, run.catalogue.reserve_args("HOT-warmup"), warmup, token=token)
        load = wrk.Load(options.threads, options.hot_connections, options.duration)
        stocked = wrk.run(url, hot_reserve_args("HOT"), load, token=token)

        # A few units left, far fewer than the clients that come for them; requests wrk
        # left behind are served first.
        last_units = max(1, options.hot_connections // 4)
        staff = Client(port, run.tokens["logistics"])
        stock = _settled_stock(staff)
        staff.expect(
            "POST",
            f"{INVENTORY}/adjustments",
            {
                "warehouse": "W01",
                "part_number": HOT_PART,
                "delta": last_units - stock["available"],
                "reason": "bench: the shelf is nearly empty",
            },
            status=201,
        )
        short = wrk.Load(options.threads, options.hot_connections, max(2.0, options.warmup))
        emptied = wrk.run(url, hot_reserve_args("HOT-last"), short, token=token)

        [stock] = staff.expect("GET", f"{INVENTORY}/stock?part_number={HOT_PART}")
        listed = staff.call("GET", f"{INVENTORY}/reservations?part_number={HOT_PART}&page_size=1")
        reservations = json.loads(listed.headers["x-pagination"])["total"]
        ledger = ledger_check(stack.settings, HOT_PART)
        created = stocked.count(201) + emptied.count(201)
        errors = stocked.unexpected(201) + emptied.unexpected(201, 409)
        oversell = max(0, stock["reserved"] - stock["on_hand"])
        in_flight = reservations - created
        agree = reservations == stock["reserved"] and 0 <= in_flight <= 2 * options.hot_connections
        outcome.figures.update(
            stocked=stocked.as_dict(),
            emptied=emptied.as_dict(),
            last_units=last_units,
            on_hand=stock["on_hand"],
            reserved=stock["reserved"],
            created_201=created,
            reservations=reservations,
            served_while_wrk_stopped=in_flight,
            errors_not_409=errors,
            oversell=oversell,
            counts_agree=agree,
            ledger_balanced=ledger["balanced"],
        )
        checks = [f"{errors} errors", f"oversell {oversell}"]
        if not agree:
            checks.append(
                f"counts disagree: {created} × 201, {reservations} reservations, "
                f"{stock['reserved']} reserved"
            )
        if not ledger["balanced"]:
            checks.append("ledger does not balance")
        outcome.rows.append(
            Row(
                f"One hot part, {options.hot_connections} concurrent clients; then its last "
                f"{last_units} units",
                f"{per_second(stocked.rate(201))} · p99 {ms(stocked.p99_ms)}; then "
                f"{emptied.count(201)} × 201, {emptied.count(409)} × 409 · " + ", ".join(checks),
                "—",
                "—",
                "0 errors but 409, 0 oversell",
                verdict(errors == 0 and oversell == 0 and agree and ledger["balanced"]),
            )
        )
    finally:
        stack.close()
