"""The results: one table of figures (printed, and kept as ``results/latest.md``), and
everything measured as ``results/<date>.json``."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

MEASURED = "measured"
NOT_MEASURED = "not measured"
FAILED = "failed"
README = Path(__file__).resolve().parent / "README.md"
README_START = "<!-- latest-results:start -->"
README_END = "<!-- latest-results:end -->"


class NotMeasured(Exception):
    """The scenario could not be measured (say, a service does not answer yet)."""


@dataclass(frozen=True)
class Row:
    figure: str
    measured: str
    ceiling: str = "—"
    ratio: str = "—"
    target: str = "—"
    result: str = ""


@dataclass
class Outcome:
    scenario: str
    status: str = MEASURED
    reason: str | None = None
    seconds: float = 0.0
    figures: dict[str, Any] = field(default_factory=dict)
    rows: list[Row] = field(default_factory=list)
    hot_spots: dict[str, list[dict[str, Any]]] = field(default_factory=dict)


def verdict(met: bool) -> str:
    return "met" if met else "**missed**"


def per_second(value: float) -> str:
    return f"{value:,.0f}/s" if value >= 100 else f"{value:,.1f}/s"


def ms(value: float) -> str:
    return f"{value:.1f} ms" if value < 100 else f"{value:,.0f} ms"


def percent(value: float) -> str:
    return f"{value * 100:.0f} %" if value >= 0.1 else f"{value * 100:.1f} %"


def table(rows: Sequence[Row]) -> str:
    header = ("Figure", "Measured", "Raw ceiling", "Ratio", "Target", "Result")
    lines = [_line(header), _line(["---"] * len(header))]
    lines += [_line((r.figure, r.measured, r.ceiling, r.ratio, r.target, r.result)) for r in rows]
    return "\n".join(lines)


def memory_table(memory: Iterable[dict[str, Any]]) -> str:
    """Peak RSS per scenario and process; gunicorn's workers are folded into one line."""
    grouped: dict[tuple[str, str], list[float]] = {}
    for entry in memory:
        grouped.setdefault((entry["scenario"], entry["process"]), []).append(entry["peak_rss_mb"])
    lines = [_line(("Scenario", "Process", "Peak RSS")), _line(["---"] * 3)]
    for (scenario, process), peaks in grouped.items():
        label = f"{process} (×{len(peaks)}, largest)" if len(peaks) > 1 else process
        lines.append(_line((scenario, label, f"{max(peaks):.0f} MB")))
    return "\n".join(lines)


def hot_spot_table(spots: Sequence[dict[str, Any]]) -> str:
    lines = [_line(("Function", "Where", "Inclusive", "Self")), _line(["---"] * 4)]
    lines += [
        _line(
            (
                f"`{s['function']}`",
                s["where"],
                f"{s['inclusive'] * 100:.1f} %",
                f"{s['self'] * 100:.1f} %",
            )
        )
        for s in spots
    ]
    return "\n".join(lines)


def _line(cells: Iterable[str]) -> str:
    return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"


def markdown(results: dict[str, Any], outcomes: Sequence[Outcome]) -> str:
    rows = [row for outcome in outcomes for row in outcome.rows]
    parts = [
        f"Run of {results['started_at'][:16].replace('T', ' ')} UTC, preset `{results['preset']}`, "
        f"commit {results['machine']['commit']}, {results['machine']['cpus']} CPUs, load "
        f"average {results['machine']['load_before']} before the run; every ceiling "
        "measured in the same run.",
        "",
        table(rows),
    ]
    notes = [
        f"- **{o.scenario}**: {o.status}: {o.reason}"
        for o in outcomes
        if o.status != MEASURED and o.reason
    ]
    if notes:
        parts += ["", *notes]
    if results["memory"]:
        parts += ["", "Peak memory (VmHWM) of every process the run started:", ""]
        parts.append(memory_table(results["memory"]))
    for outcome in outcomes:
        for name, spots in outcome.hot_spots.items():
            if spots:
                parts += ["", f"Hot spots (py-spy), {name}:", ""]
                parts.append(hot_spot_table(spots))
    return "\n".join(parts) + "\n"


def write(results_dir: Path, results: dict[str, Any], outcomes: Sequence[Outcome]) -> Path:
    results_dir.mkdir(parents=True, exist_ok=True)
    stamp = datetime.fromisoformat(results["started_at"]).strftime("%Y-%m-%d")
    path = results_dir / f"{stamp}.json"
    document = {**results, "scenarios": {o.scenario: _outcome_json(o) for o in outcomes}}
    path.write_text(json.dumps(document, indent=2, default=str) + "\n")
    (results_dir / "latest.md").write_text(markdown(results, outcomes))
    return path


def update_readme(text: str, readme: Path = README) -> None:
    """Put the latest table between the README's markers."""
    content = readme.read_text()
    block = f"{README_START}\n{text}{README_END}"
    pattern = re.compile(re.escape(README_START) + r".*?" + re.escape(README_END), re.S)
    readme.write_text(pattern.sub(lambda _: block, content))


def _outcome_json(outcome: Outcome) -> dict[str, Any]:
    data = asdict(outcome)
    data.pop("scenario")
    return data
