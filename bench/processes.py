"""Real Partsflow processes, started as an operator would, and their peak memory."""

from __future__ import annotations

import http.client
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class PeakMemory:
    process: str
    pid: int
    peak_rss_mb: float


class Process:
    """A child process in its own session, so that stopping it stops its children."""

    def __init__(self, name: str, args: list[str], env: dict[str, str], log: Path) -> None:
        self.name = name
        self.log = log
        self._handle = log.open("ab")
        self.popen = subprocess.Popen(
            args,
            env=env,
            cwd=ROOT,
            stdout=self._handle,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def stop(self) -> None:
        if self.alive():
            os.killpg(self.pid, signal.SIGTERM)
            try:
                self.popen.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.pid, signal.SIGKILL)
                self.popen.wait(timeout=10)
        self._handle.close()

    def tail(self, characters: int = 3000) -> str:
        return self.log.read_text(errors="replace")[-characters:]

    def cpu_seconds(self) -> float:
        """CPU time used so far by the process and every process below it."""
        return sum(_cpu_seconds(pid) for _, pid in _tree(self.pid))

    def peak_memory(self) -> list[PeakMemory]:
        """VmHWM of the process and of every process below it (gunicorn's workers)."""
        found = []
        for depth, pid in _tree(self.pid):
            peak = _vm_hwm_kb(pid)
            if peak is None:
                continue
            label = self.name if depth == 0 else f"{self.name} · worker"
            found.append(PeakMemory(label, pid, round(peak / 1024, 1)))
        return found


def partsflow(name: str, *args: str, env: dict[str, str], log: Path) -> Process:
    return Process(name, [sys.executable, "-m", "services.cli", *args], env, log)


def run_partsflow(*args: str, env: dict[str, str]) -> None:
    """A `partsflow` command that must succeed (``db upgrade``)."""
    result = subprocess.run(
        [sys.executable, "-m", "services.cli", *args],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    if result.returncode != 0:
        raise RuntimeError(f"partsflow {' '.join(args)} failed:\n{result.stderr[-3000:]}")


def wait_for(
    condition: Callable[[], Any], *, timeout: float, what: str, process: Process | None = None
) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if process is not None and not process.alive():
            raise RuntimeError(f"{process.name} exited while waiting for {what}:\n{process.tail()}")
        if time.monotonic() > deadline:
            detail = f":\n{process.tail()}" if process is not None else ""
            raise RuntimeError(f"timed out after {timeout:.0f}s waiting for {what}{detail}")
        time.sleep(0.05)


def answers(port: int, path: str) -> bool:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
    try:
        connection.request("GET", path)
        return connection.getresponse().status == 200
    except OSError:
        return False
    finally:
        connection.close()


def _tree(root: int) -> list[tuple[int, int]]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        # The command name may hold spaces and parentheses: the fields follow the last ')'.
        parent = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(parent, []).append(int(entry))
    found, stack = [], [(0, root)]
    while stack:
        depth, pid = stack.pop()
        found.append((depth, pid))
        stack.extend((depth + 1, child) for child in sorted(children.get(pid, []), reverse=True))
    return found


def machine_cpu_seconds() -> tuple[float, float]:
    """Busy and total CPU seconds of the whole machine so far, all cores together."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    # user nice system idle iowait irq softirq steal: idle and iowait are not busy.
    total = sum(fields[:8])
    return (total - fields[3] - fields[4]) / CLOCK_TICKS, total / CLOCK_TICKS


def _cpu_seconds(pid: int) -> float:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    fields = stat.rsplit(")", 1)[1].split()
    # utime and stime, the 14th and 15th fields of the line, in clock ticks.
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def _vm_hwm_kb(pid: int) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except OSError:
        return None
    return None
