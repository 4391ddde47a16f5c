"""Real health numbers of the machine the agent runs on (psutil)."""

import os
import platform
import time
from pathlib import Path

import psutil

import fleet_protocol as fp


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("model name", "Hardware", "Model")):
                return line.split(":", 1)[1].strip()[:128]
    except OSError:
        pass
    return platform.processor()[:128]


def hardware_info() -> dict:
    return {
        "cpu_model": _cpu_model(),
        "cpu_count": os.cpu_count() or 0,
        "memory_total_mb": round(psutil.virtual_memory().total / 2**20, 1),
        "os": f"{platform.system()} {platform.release()}"[:128],
        "arch": platform.machine()[:128],
        "accelerators": [],
    }


def _temperature() -> float | None:
    try:
        sensors = psutil.sensors_temperatures()
    except (AttributeError, OSError):
        return None
    readings = [t.current for entries in sensors.values() for t in entries if t.current is not None]
    return round(max(readings), 1) if readings else None


class TelemetryCollector:
    def __init__(self, state_dir: Path):
        self.state_dir = state_dir
        self.started = time.monotonic()
        psutil.cpu_percent(interval=None)  # the first call only starts the measurement window

    def collect(
        self,
        queues: dict[str, int] | None = None,
        cameras: list[fp.CameraTelemetry] | None = None,
        runtimes: list[fp.RuntimeTelemetry] | None = None,
    ) -> fp.TelemetryBody:
        """The machine's numbers, plus what the pipeline measured (per camera fps, per runtime latency, queues)."""
        memory = psutil.virtual_memory()
        try:
            disk_free_mb = psutil.disk_usage(str(self.state_dir)).free / 2**20
        except OSError:
            disk_free_mb = None
        return fp.TelemetryBody(
            cpu_percent=min(100.0, psutil.cpu_percent(interval=None)),
            memory_percent=memory.percent,
            memory_used_mb=round(memory.used / 2**20, 1),
            load_1m=os.getloadavg()[0],
            temperature_c=_temperature(),
            disk_free_mb=round(disk_free_mb, 1) if disk_free_mb is not None else None,
            uptime_s=round(time.monotonic() - self.started, 1),
            queues=queues or {},
            cameras=list(cameras or [])[:64],
            runtimes=list(runtimes or [])[:16],
        )
