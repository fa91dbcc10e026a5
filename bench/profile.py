"""Where the time goes: py-spy samples a process tree while load runs, and the
samples are summed per function, inclusive (anywhere on the stack) and self (the
frame running)."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

RATE = 250
# Frames inside which a process is busy with a request or a message.
SERVING = ("handle_request (gunicorn/workers/sync.py",)
HANDLING = (
    "MessageConsumer.handle (shared/bus/consumer.py",
    "OutboxRelay.relay_once (shared/bus/relay.py",
)
_FRAME = re.compile(r"^(?P<function>.+?) \((?P<where>[^()]*?)(?::\d+)?\)$")
OUR_CODE = ("services/", "shared/", "bench/")


def py_spy() -> str | None:
    beside = Path(sys.executable).with_name("py-spy")
    return str(beside) if beside.exists() else shutil.which("py-spy")


class Sampler:
    """``py-spy record`` of a process and its children, in the background. Sampling
    slows the process down: what runs meanwhile is not a measurement."""

    def __init__(self, pid: int, seconds: float, output: Path) -> None:
        executable = py_spy()
        if executable is None:
            raise RuntimeError("py-spy is not installed (pip install py-spy)")
        self.output = output
        self.process = subprocess.Popen(
            [
                executable,
                "record",
                "--pid",
                str(pid),
                "--subprocesses",
                "--nonblocking",
                "--format",
                "raw",
                "--rate",
                str(RATE),
                "--duration",
                str(max(1, round(seconds))),
                "--output",
                str(output),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )

    def finish(self, timeout: float = 60) -> None:
        out, _ = self.process.communicate(timeout=timeout)
        if self.process.returncode != 0 or not self.output.exists():
            raise RuntimeError(f"py-spy failed: {out.strip()[-500:]}")


def hot_spots(folded: Path, within: Sequence[str], label: str, top: int = 10) -> dict[str, Any]:
    """Per function, its share of the samples taken inside one of the ``within``
    frames (a request being served, a message being handled): our own functions by
    inclusive share, and any function by self share."""
    inclusive: Counter[tuple[str, str]] = Counter()
    own: Counter[tuple[str, str]] = Counter()
    total = 0
    for line in folded.read_text(errors="replace").splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        frames = [_parse(frame) for frame in stack.split(";")[1:]]
        start = next(
            (i for i, f in enumerate(frames) if any(w in f"{f[0]} ({f[1]})" for w in within)),
            None,
        )
        if start is None:
            continue
        frames = frames[start:]
        count = int(count_text)
        total += count
        for frame in set(frames):
            inclusive[frame] += count
        own[frames[-1]] += count
    if not total:
        return {}

    def entry(frame: tuple[str, str]) -> dict[str, Any]:
        return {
            "function": frame[0],
            "where": frame[1],
            "inclusive": round(inclusive[frame] / total, 4),
            "self": round(own[frame] / total, 4),
        }

    ours = [f for f, _ in inclusive.most_common() if f[1].startswith(OUR_CODE)]
    return {
        f"{label}, our code, share of {total} samples": [entry(f) for f in ours[:top]],
        f"{label}, any code, by self share": [entry(f) for f, _ in own.most_common(top)],
    }


def _parse(frame: str) -> tuple[str, str]:
    match = _FRAME.match(frame.strip())
    if match is None:
        return frame.strip(), ""
    return match["function"], match["where"]
