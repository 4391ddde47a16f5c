"""A real Updater in its own process, for the crash tests: handle one deploy command, or resume after a kill.

    python -m tests.edge_agent.update.driver <state_dir> <setup.json> deploy   # handle setup["command"]
    python -m tests.edge_agent.update.driver <state_dir> <setup.json> resume   # Updater.resume() after a restart

setup.json: {"trusted": Keyring.export_public(), "device_key": PEM path, "device_id", "command": DeployCommand
as JSON, "blob": ciphertext path, "fps": the pipeline's fps, "acks": JSON-lines file the acks are appended to}.
With EDGE_AGENT_UPDATE_PAUSE_IN set, the updater stops in that state for the test to SIGKILL it.
"""

import json
import sys
from pathlib import Path

import msgspec
from cryptography.hazmat.primitives.serialization import load_pem_private_key

import fleet_protocol as fp
from edge_agent.update import Updater
from model_store.crypto import import_public_keys
from tests.edge_agent.update.helpers import AGENT_VERSION, Pipeline, copying_fetch, write_ack


def main(argv: list[str]) -> int:
    state_dir, setup_path, action = Path(argv[0]), Path(argv[1]), argv[2]
    setup = json.loads(setup_path.read_text())
    command = msgspec.json.decode(setup["command"].encode(), type=fp.DeployCommand)
    pipeline = Pipeline(fps=setup["fps"])
    updater = Updater(
        state_dir,
        device_id=setup["device_id"],
        device_private_key=load_pem_private_key(Path(setup["device_key"]).read_bytes(), password=None),
        trusted_keys=import_public_keys(setup["trusted"]),
        agent_version=AGENT_VERSION,
        fetch=copying_fetch({command.command_id: Path(setup["blob"])}, state_dir.parent / "downloads"),
        report=write_ack(Path(setup["acks"])),
        activate=pipeline.activate,
        health=pipeline.health,
        preferred_runtimes=["reference"],
        observe_poll_s=0.05,
    )
    if action == "deploy":
        updater.handle(command)
    elif action == "resume":
        updater.resume()
    else:
        raise SystemExit(f"unknown action {action!r}")
    print(json.dumps({"state": updater.state, "outcome": updater.outcome}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
