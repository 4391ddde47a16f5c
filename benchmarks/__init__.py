"""Benchmarks: what the platform's hot paths achieve on this machine, as ratios against a baseline.

``make bench`` (``python -m benchmarks``) runs every benchmark registered below; each one writes
``benchmarks/results/<name>.json`` and rewrites its own section of ``docs/benchmarks.md``.
Benchmarks are not tests: nothing here asserts a time, the numbers are recorded and read by people.

Adding a benchmark: write ``benchmarks/<name>.py`` with a module docstring saying what it measures
and why, and a ``run(options: Options) -> Result`` function (see ``benchmarks.harness``), then add
one line to ``BENCHMARKS``. Every table compares a measured rate with a baseline measured in the
same run and process, so the ratio still means something on a different machine.
"""

from dataclasses import dataclass


@dataclass(frozen=True)
class Registration:
    name: str
    module: str
    summary: str


# In the order `make bench` runs them; modules are imported only when their benchmark runs, so
# `--help` stays instant and a benchmark's heavy imports (Django, torch) cost only its own run.
BENCHMARKS: dict[str, Registration] = {
    r.name: r
    for r in [
        Registration(
            "protocol",
            "benchmarks.protocol",
            "fleet_protocol encode and decode+validate, vs stdlib json plus hand-written validation",
        ),
        Registration(
            "ingest",
            "benchmarks.ingest",
            "telemetry written to PostgreSQL by one ingest process in batches of 500, vs one message "
            "per transaction; and end to end through Mosquitto",
        ),
        Registration(
            "smartpark",
            "benchmarks.smartpark",
            "the detector's mAP on held-out scenes per condition, and detector + tracker + rules on held-out "
            "60 s sequences scored against their event logs (beside the same rules fed true boxes)",
        ),
        Registration(
            "compression",
            "benchmarks.compression",
            "the detector compressed by every method (fp32, ONNX Runtime int8 PTQ, projection, ADMM per codebook, "
            "90 % pruning + ADMM, data-free): mAP of the integer model, compression ratio; digits beside it",
        ),
        Registration(
            "model_store",
            "benchmarks.model_store",
            "model packages: content-key wraps per second for 10,000 devices vs encrypting per device; "
            "AES-GCM vs SHA-256; signed build and verified read vs plain tar",
        ),
        Registration("runtimes", "benchmarks.runtimes", "the agent's cpu-int8 detector vs fp32 ONNX Runtime and torch"),
        Registration(
            "agent_pipeline",
            "benchmarks.agent_pipeline",
            "frames/s through the agent's whole pipeline on 4 synthetic cameras, vs its runtime alone",
        ),
    ]
}
