"""HTTP reservations through gunicorn on PostgreSQL, against the raw ceiling: the same
transaction from a bare WSGI function, under the same gunicorn settings, with the same
wrk load over the same many stock rows. The two take turns (``rounds``), so that a
change in the machine's load falls on both; the CPU each server spends per request is
measured too. Then, if asked, a profile of the app."""

from __future__ import annotations

from bench import profile, wrk
from bench.report import Outcome, Row, ms, per_second, percent, verdict
from bench.stack import Run, Stack

TARGET = 0.60


def run(run: Run, outcome: Outcome) -> None:
    options = run.options
    turn_load = wrk.Load(options.threads, options.connections, options.duration / options.rounds)
    warmup = wrk.Load(options.threads, options.connections, options.warmup)
    token = run.tokens["service"]
    reserve = run.catalogue.reserve_args
    stack = Stack(run, "http", bus=False)
    try:
        app_port = stack.web("inventory")
        ceiling_port = stack.ceiling(stack.inventory_copy("ceiling"))
        app_url, ceiling_url = f"http://127.0.0.1:{app_port}", f"http://127.0.0.1:{ceiling_port}"
        for url, label in ((ceiling_url, "ceiling-warmup"), (app_url, "app-warmup")):
            wrk.run(url, reserve(f"HTTP-{label}"), warmup, token=token)
        turns: dict[str, list[wrk.WrkResult]] = {"ceiling": [], "app": []}
        cpu = {"ceiling": 0.0, "app": 0.0}
        servers = {
            "ceiling": (ceiling_url, stack.process("ceiling")),
            "app": (app_url, stack.process("web inventory")),
        }
        for turn in range(options.rounds):
            for label, (url, server) in servers.items():
                before = server.cpu_seconds()
                turns[label].append(
                    wrk.run(url, reserve(f"HTTP-{label}{turn}"), turn_load, token=token)
                )
                cpu[label] += server.cpu_seconds() - before
        ceiling, app = wrk.combine(turns["ceiling"]), wrk.combine(turns["app"])
        cpu_ms = {
            label: round(1000 * cpu[label] / max(1, result.requests), 2)
            for label, result in (("ceiling", ceiling), ("app", app))
        }
        ratio = app.rate(201) / ceiling.rate(201) if ceiling.rate(201) else 0.0
        outcome.figures.update(
            app=app.as_dict(),
            ceiling=ceiling.as_dict(),
            ratio=round(ratio, 3),
            app_unexpected=app.unexpected(201),
            # CPU the server's processes spent per request: steadier than throughput on
            # a busy machine, and it shows where the difference comes from.
            cpu_ms_per_request=cpu_ms,
        )
        outcome.rows.append(
            Row(
                f"HTTP reservations/s, gunicorn ({options.web_workers} sync worker(s)) on "
                f"PostgreSQL, {options.connections} connections",
                f"{_summary(app)} · {cpu_ms['app']} ms CPU/request",
                f"{_summary(ceiling)} · {cpu_ms['ceiling']} ms CPU/request",
                percent(ratio),
                f"≥ {percent(TARGET)}",
                verdict(ratio >= TARGET and app.unexpected(201) == 0),
            )
        )
        if options.profile:
            _profile(run, stack, app_url, outcome)
    finally:
        stack.close()


def _summary(result: wrk.WrkResult) -> str:
    text = f"{per_second(result.rate(201))} · p50 {ms(result.p50_ms)} · p99 {ms(result.p99_ms)}"
    odd = result.unexpected(201)
    return text + (f" · {odd} not 201" if odd else "")


def _profile(run: Run, stack: Stack, url: str, outcome: Outcome) -> None:
    """The app again under the same load, with py-spy sampling its workers (not a
    measured run: sampling costs time)."""
    options = run.options
    web = stack.process("web inventory")
    output = run.workdir / "http-profile.txt"
    try:
        sampler = profile.Sampler(web.pid, options.duration, output)
        wrk.run(
            url,
            run.catalogue.reserve_args("HTTP-profile"),
            wrk.Load(options.threads, options.connections, options.duration),
            token=run.tokens["service"],
        )
        sampler.finish()
    except RuntimeError as error:
        outcome.figures["profile"] = f"not profiled: {error}"
        return
    outcome.hot_spots.update(
        profile.hot_spots(output, profile.SERVING, "HTTP reserve (inventory web)")
    )
