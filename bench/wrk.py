"""wrk, the HTTP load generator of every HTTP figure: the same threads, connections and
duration for an app and for its ceiling."""

from __future__ import annotations

import json
import re
import shutil
import signal
import subprocess
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

SCRIPT = Path(__file__).resolve().parent / "lua" / "partsflow.lua"
_PERCENTILE = re.compile(r"^\s+(50|75|90|99)%\s+([\d.]+)(us|ms|s|m)\s*$")
_TO_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0}


class WrkMissing(RuntimeError):
    pass


@dataclass(frozen=True)
class Load:
    threads: int
    connections: int
    duration: float


@dataclass(frozen=True)
class WrkResult:
    requests: int
    seconds: float
    statuses: dict[str, int]
    socket_errors: dict[str, int]
    p50_ms: float
    p75_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    connections: int
    # The latency distribution as 1000 quantiles (0.1 % steps), in ms, for merging runs.
    quantiles_ms: tuple[float, ...] = field(default=(), repr=False)

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0

    def rate(self, status: int) -> float:
        return self.statuses.get(str(status), 0) / self.seconds if self.seconds else 0.0

    def count(self, status: int) -> int:
        return self.statuses.get(str(status), 0)

    def unexpected(self, *expected: int) -> int:
        """Answers with another status, plus requests that got no answer at all."""
        allowed = {str(s) for s in expected}
        odd = sum(n for status, n in self.statuses.items() if status not in allowed)
        return odd + sum(self.socket_errors.values())

    def as_dict(self) -> dict[str, object]:
        data = asdict(self)
        data.pop("quantiles_ms")
        return {**data, "rps": round(self.rps, 1)}


def combine(results: Sequence[WrkResult]) -> WrkResult:
    """Several runs of one load as one: counts add up, and the percentiles come from
    the runs' quantiles, each run weighing as many requests as it made."""
    if len(results) == 1:
        return results[0]
    weighted = sorted(
        (q, r.requests / len(r.quantiles_ms)) for r in results for q in r.quantiles_ms
    )
    total = sum(weight for _, weight in weighted)

    def percentile(p: float) -> float:
        seen = 0.0
        for value, weight in weighted:
            seen += weight
            if seen >= total * p / 100:
                return value
        return weighted[-1][0]

    statuses: Counter[str] = Counter()
    errors: Counter[str] = Counter()
    for r in results:
        statuses.update(r.statuses)
        errors.update(r.socket_errors)
    return WrkResult(
        requests=sum(r.requests for r in results),
        seconds=sum(r.seconds for r in results),
        statuses=dict(statuses),
        socket_errors=dict(errors),
        p50_ms=percentile(50),
        p75_ms=percentile(75),
        p90_ms=percentile(90),
        p99_ms=percentile(99),
        max_ms=max(r.max_ms for r in results),
        connections=results[0].connections,
    )


def require_wrk() -> str:
    path = shutil.which("wrk")
    if path is None:
        raise WrkMissing("wrk is not installed: apt-get install -y wrk")
    return path


def run(
    url: str,
    script_args: list[str],
    load: Load,
    *,
    token: str,
    stop_when: Callable[[], bool] | None = None,
) -> WrkResult:
    """Run wrk against ``url`` with the benchmark's Lua script. ``stop_when``: end the
    run early (wrk stops and reports on SIGINT) once it holds, polled meanwhile."""
    command = [
        require_wrk(),
        "--threads",
        str(load.threads),
        "--connections",
        str(max(load.connections, load.threads)),
        "--duration",
        f"{max(1, round(load.duration))}s",
        "--timeout",
        "10s",
        "--latency",
        "--header",
        f"Authorization: Bearer {token}",
        "--script",
        str(SCRIPT),
        url,
        "--",
        *script_args,
    ]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if stop_when is not None:
        while process.poll() is None:
            if stop_when():
                process.send_signal(signal.SIGINT)
                break
            time.sleep(0.02)
    stdout, stderr = process.communicate(timeout=load.duration + 60)
    if process.returncode != 0:
        raise RuntimeError(f"wrk failed ({process.returncode}): {stderr or stdout}")
    return parse(stdout, load.connections)


def parse(output: str, connections: int) -> WrkResult:
    marker = next((line for line in output.splitlines() if line.startswith("PFBENCH ")), None)
    if marker is None:
        raise RuntimeError(f"wrk printed no results:\n{output}")
    data = json.loads(marker.removeprefix("PFBENCH "))
    percentiles = {}
    for line in output.splitlines():
        match = _PERCENTILE.match(line)
        if match:
            percentiles[match[1]] = float(match[2]) * _TO_MS[match[3]]
    latency = data["latency_us"]
    return WrkResult(
        requests=data["requests"],
        seconds=data["duration_us"] / 1e6,
        statuses=dict(data["statuses"]),
        socket_errors={k: v for k, v in data["errors"].items() if v},
        p50_ms=percentiles.get("50", latency["p50"] / 1000),
        p75_ms=percentiles.get("75", 0.0),
        p90_ms=percentiles.get("90", latency["p90"] / 1000),
        p99_ms=percentiles.get("99", latency["p99"] / 1000),
        max_ms=latency["max"] / 1000,
        connections=connections,
        quantiles_ms=tuple(q / 1000 for q in data["quantiles_us"]),
    )
