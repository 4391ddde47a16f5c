"""What every benchmark shares: timing rounds, the machine description, the JSON and the docs section.

A benchmark returns a ``Result``: one or more ``Table``s of ``Comparison``s (a measured rate and
its baseline's rate, both in the same unit) plus notes. The harness adds the machine, the exact
command and the date, writes ``benchmarks/results/<name>.json`` and replaces the benchmark's
section of ``docs/benchmarks.md`` between ``<!-- bench:<name> -->`` and ``<!-- /bench:<name> -->``,
leaving every other section as it was.
"""

import contextlib
import json
import os
import platform
import re
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
RESULTS_DIR = REPO_ROOT / "benchmarks" / "results"
DOCS_FILE = REPO_ROOT / "docs" / "benchmarks.md"
TIMES = "\N{MULTIPLICATION SIGN}"


@dataclass(frozen=True)
class Options:
    # A shorter variant (fewer messages, fewer rounds) that checks the benchmark still works.
    quick: bool = False


@dataclass
class Comparison:
    case: str
    measured: float
    baseline: float
    unit: str = "msgs/s"
    # Every round's rate, for the JSON: the spread says how far to trust the medians.
    measured_rounds: list[float] = field(default_factory=list)
    baseline_rounds: list[float] = field(default_factory=list)

    @property
    def ratio(self) -> float:
        return self.measured / self.baseline if self.baseline else float("inf")


@dataclass
class Table:
    measured_label: str
    baseline_label: str
    rows: list[Comparison]
    title: str = ""


@dataclass
class Result:
    title: str
    # Markdown: what is measured against what, and why that baseline is the fair one.
    description: str
    tables: list[Table]
    notes: list[str] = field(default_factory=list)
    # Parameters and anything else worth keeping in the JSON (message counts, database settings).
    details: dict = field(default_factory=dict)
    # Further markdown (accuracy tables and the like) rendered after the ratio tables.
    markdown: list[str] = field(default_factory=list)


# --- timing --------------------------------------------------------------------------------------


@dataclass
class Workload:
    name: str
    # Does the work once and returns how many messages it handled.
    run: Callable[[], int]
    # Untimed preparation before every round (e.g. emptying a table).
    setup: Callable[[], None] | None = None


def measure_rates(workloads: list[Workload], rounds: int) -> dict[str, list[float]]:
    """Run every workload ``rounds`` times, interleaved, and return each one's rates (per second).

    Interleaving the measured code and its baseline round by round means a slow patch of the
    machine (another process, a cache flush, a checkpoint) hurts both instead of one.
    """
    rates: dict[str, list[float]] = {w.name: [] for w in workloads}
    for _ in range(rounds):
        for workload in workloads:
            if workload.setup is not None:
                workload.setup()
            start = time.perf_counter()
            count = workload.run()
            elapsed = time.perf_counter() - start
            rates[workload.name].append(count / elapsed)
    return rates


def compare(case: str, rates: dict[str, list[float]], measured: str, baseline: str) -> Comparison:
    """The medians of two workloads' rates as a comparison."""
    return Comparison(
        case=case,
        measured=statistics.median(rates[measured]),
        baseline=statistics.median(rates[baseline]),
        measured_rounds=rates[measured],
        baseline_rounds=rates[baseline],
    )


# --- the machine and the command -----------------------------------------------------------------


def machine() -> dict:
    """CPU, cores, memory and Python: what a reader needs to compare these numbers with theirs."""
    cpu_model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    ram_gib = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                ram_gib = round(int(line.split()[1]) / 1024**2, 1)
                break
    except OSError:
        pass
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {
        "cpu_model": cpu_model,
        "cpu_count": os.cpu_count(),
        "usable_cores": usable,
        "ram_gib": ram_gib,
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "os": platform.platform(terse=True),
    }


def command_line(argv: list[str]) -> str:
    """The command as typed from the repository root, e.g. ``.venv/bin/python -m benchmarks --quick``."""
    python = Path(sys.executable)
    with contextlib.suppress(ValueError):  # a Python outside the repository is shown in full
        python = python.relative_to(REPO_ROOT)
    return " ".join([str(python), "-m", "benchmarks", *argv])


# --- writing the results -------------------------------------------------------------------------


def build_record(
    name: str, result: Result, *, command: str, quick: bool, started_at: datetime, duration_s: float
) -> dict:
    """The JSON form of a result, with the machine, the command and the date."""
    return {
        "benchmark": name,
        "title": result.title,
        "command": command,
        "quick": quick,
        "started_at": started_at.isoformat(timespec="seconds"),
        "duration_s": round(duration_s, 1),
        "machine": machine(),
        "tables": [
            {
                "title": table.title,
                "measured": table.measured_label,
                "baseline": table.baseline_label,
                "rows": [{**asdict(row), "ratio": row.ratio} for row in table.rows],
            }
            for table in result.tables
        ],
        "notes": result.notes,
        "details": result.details,
    }


def save(name: str, record: dict, section: str) -> Path:
    """Write ``benchmarks/results/<name>.json`` and this benchmark's docs section; return the JSON's path."""
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = RESULTS_DIR / f"{name}.json"
    path.write_text(json.dumps(record, indent=2) + "\n")
    update_docs(name, section)
    return path


def _rate(value: float) -> str:
    if value >= 100:
        return f"{value:,.0f}"
    return f"{value:,.1f}"


def _ratio(value: float) -> str:
    return f"{value:.2f}{TIMES}" if value < 10 else f"{value:.1f}{TIMES}"


def render_section(name: str, record: dict, result: Result) -> str:
    m = record["machine"]
    lines = [f"## {name}: {result.title}", "", result.description.strip(), ""]
    for table in result.tables:
        if table.title:
            lines += [f"**{table.title}**", ""]
        lines += [
            f"| Case | {table.measured_label} | {table.baseline_label} | Ratio |",
            "|---|---:|---:|---:|",
        ]
        lines += [
            f"| {row.case} | {_rate(row.measured)} {row.unit} | {_rate(row.baseline)} {row.unit} | "
            f"**{_ratio(row.ratio)}** |"
            for row in table.rows
        ]
        lines.append("")
    for block in result.markdown:
        lines += [block.strip(), ""]
    lines += [f"- {note}" for note in result.notes]
    if result.notes:
        lines.append("")
    cores = m["cpu_count"] if m["usable_cores"] == m["cpu_count"] else f"{m['usable_cores']} of {m['cpu_count']}"
    lines += [
        f"Measured {record['started_at'][:10]} on {m['cpu_model']}, {cores} cores, {m['ram_gib']} GiB RAM, "
        f"{m['python']}, {m['os']}; {record['duration_s']:.0f} s.",
        f"Command: `{record['command']}`{' (quick variant: fewer rounds, noisier)' if record['quick'] else ''}. "
        f"Raw numbers: [`benchmarks/results/{name}.json`](../benchmarks/results/{name}.json).",
    ]
    return "\n".join(lines)


DOCS_INTRO = """\
# Benchmarks

What the platform's hot paths achieve, measured by `make bench` (`.venv/bin/python -m benchmarks`;
`--help` lists the benchmarks, `python -m benchmarks protocol` runs one, `--quick` a short variant).
Each section below is rewritten by its own benchmark, which also leaves its raw numbers in
`benchmarks/results/<name>.json`; the text outside the sections is kept.

**Reading the ratios.** Absolute rates depend on the machine, so every number comes with a baseline
measured in the same run and the same process, interleaved round by round with the measured code:
*ratio = measured ÷ baseline*, both rates, so above 1\N{MULTIPLICATION SIGN} means the measured code is that many times
faster. Rates are medians of several rounds (every round is in the JSON). The machine (CPU, cores,
memory, Python) and the exact command are under each table. Benchmarks never fail a build; a
regression shows up as a ratio that drops from one commit to the next.
"""


def update_docs(name: str, section: str) -> None:
    start, end = f"<!-- bench:{name} -->", f"<!-- /bench:{name} -->"
    block = f"{start}\n{section}\n{end}"
    text = DOCS_FILE.read_text() if DOCS_FILE.exists() else DOCS_INTRO
    pattern = re.compile(re.escape(start) + r".*?" + re.escape(end), re.DOTALL)
    if pattern.search(text):
        # A function replacement: the section may contain backslashes that re.sub would interpret.
        text = pattern.sub(lambda _: block, text, count=1)
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    DOCS_FILE.parent.mkdir(parents=True, exist_ok=True)
    DOCS_FILE.write_text(text)


def now() -> datetime:
    return datetime.now(tz=UTC)
