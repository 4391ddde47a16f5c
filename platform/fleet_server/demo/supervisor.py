"""A small process supervisor for the demo: start children in their own sessions, log each to a file,
stop them in reverse order on Ctrl-C (SIGTERM, then SIGKILL after a grace period)."""

import os
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class Child:
    name: str
    argv: list[str]
    process: subprocess.Popen
    log_path: Path


@dataclass
class Supervisor:
    log_dir: Path
    env: dict[str, str]
    cwd: Path
    children: list[Child] = field(default_factory=list)

    def start(self, name: str, argv: list[str], *, env: dict[str, str] | None = None) -> Child:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        log_path = self.log_dir / f"{name}.log"
        log = open(log_path, "ab")  # noqa: SIM115 - the child owns it for its lifetime
        process = subprocess.Popen(
            argv,
            cwd=self.cwd,
            env={**self.env, **(env or {})},
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            # Own session: Ctrl-C reaches only the demo, which then stops children in order.
            start_new_session=True,
        )
        log.close()
        child = Child(name, argv, process, log_path)
        self.children.append(child)
        return child

    def run_once(self, name: str, argv: list[str], timeout_s: float = 120) -> subprocess.CompletedProcess:
        return subprocess.run(
            argv, cwd=self.cwd, env=self.env, capture_output=True, text=True, timeout=timeout_s, check=False
        )

    def exited(self) -> list[Child]:
        return [child for child in self.children if child.process.poll() is not None]

    def stop_all(self, grace_s: float = 10.0) -> None:
        for child in reversed(self.children):
            self.stop(child, grace_s)

    @staticmethod
    def stop(child: Child, grace_s: float) -> None:
        if child.process.poll() is not None:
            return
        try:
            os.killpg(child.process.pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + grace_s
        while time.monotonic() < deadline and child.process.poll() is None:
            time.sleep(0.1)
        if child.process.poll() is None:
            os.killpg(child.process.pid, signal.SIGKILL)
            child.process.wait()
