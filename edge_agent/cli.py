"""``edge-agent``: enroll this device, run the agent, or show its state."""

import argparse
import json
import logging
import os
import signal
import sys
import time
from pathlib import Path

from edge_agent import __version__
from edge_agent.identity import DeviceIdentity, NotEnrolled, default_state_dir
from edge_agent.video.spec import SPEC_HELP

DEVICE_KINDS = ("smart_box_fpga", "smart_box_cpu", "integrated_camera")


def _camera(value: str) -> tuple[str, str]:
    camera_id, _, name = value.partition(":")
    if not camera_id:
        raise argparse.ArgumentTypeError("a camera is ID or ID:NAME")
    return camera_id, name


def _camera_source(value: str) -> tuple[str, str]:
    from edge_agent.video.spec import SourceSpecError, parse_camera_source

    try:
        return parse_camera_source(value)
    except SourceSpecError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _registered_runtimes() -> list[str]:
    # The registry only: which of them import here (onnxruntime...) is checked when the agent runs, not for --help.
    from edge_agent.runtimes import RUNTIMES

    return sorted(RUNTIMES)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="edge-agent",
        description="The smart-park device agent: enrolls with the fleet platform, keeps an MQTT session, "
        "reports health and runs the platform's commands.",
    )
    parser.add_argument("--version", action="version", version=f"edge-agent {__version__}")
    parser.add_argument(
        "--state-dir",
        type=Path,
        default=None,
        help="where identity, keys and state live (default: $EDGE_AGENT_STATE_DIR, /var/lib/edge-agent as root, "
        "else ~/.local/state/edge-agent)",
    )
    parser.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    commands = parser.add_subparsers(dest="command", required=True, metavar="{enroll,run,status}")

    enroll = commands.add_parser(
        "enroll",
        help="exchange a one-time claim token for this device's identity",
        description="Generate this device's X25519 key pair, register its public key with the platform using a "
        "one-time claim token, and store the identity and MQTT credentials (mode 0600) in the state directory.",
    )
    enroll.add_argument("--server", required=True, help="the platform's URL, e.g. https://fleet.example.com")
    enroll.add_argument("--token", required=True, help="the claim token an operator created for this device")
    enroll.add_argument("--kind", required=True, choices=DEVICE_KINDS, help="what this device is")
    enroll.add_argument("--name", default="", help="a display name (default: the platform picks one)")
    enroll.add_argument(
        "--camera",
        action="append",
        default=[],
        type=_camera,
        metavar="ID[:NAME]",
        help="a camera (repeatable)",
    )
    enroll.add_argument("--force", action="store_true", help="replace an existing identity")

    run = commands.add_parser(
        "run",
        help="connect and serve until SIGTERM",
        description="Connect to the broker with a Last Will, publish a retained online status and periodic "
        "telemetry, run commands (model and zone updates through the update state machine), run the active "
        "detector on the cameras given with --source and publish their events through an on-disk outbox, and "
        "reconnect with exponential back-off and jitter. SIGTERM or Ctrl-C publishes 'offline' and exits cleanly.",
    )
    run.add_argument("--keepalive", type=int, default=None, help="MQTT keepalive in seconds (default: as enrolled)")
    run.add_argument(
        "--telemetry-interval",
        type=float,
        default=None,
        help="seconds between telemetry messages (default: as enrolled)",
    )
    run.add_argument(
        "--reconnect-max-delay", type=float, default=60.0, help="ceiling of the reconnect back-off in seconds"
    )
    run.add_argument("--source", action="append", default=[], type=_camera_source, metavar="ID=SPEC", help=SPEC_HELP)
    run.add_argument("--fps", type=float, default=5.0, help="frames per second taken from each synthetic or image "
                     "folder source (default: 5)")  # fmt: skip
    run.add_argument(
        "--runtime",
        action="append",
        default=[],
        metavar="NAME",
        help="preferred runtime, repeatable in order of preference (default: cpu-int8, then reference); "
        "registered: " + ", ".join(_registered_runtimes()),
    )
    run.add_argument("--threads", type=int, default=None, help="inference threads of the cpu-int8 runtime")
    run.add_argument(
        "--observe",
        type=float,
        default=30.0,
        metavar="SECONDS",
        help="health window after activating an update, before it is committed (default 30; a deploy command "
        "may set its own)",
    )

    status = commands.add_parser(
        "status",
        help="show identity and the running agent's state",
        description="Show this device's identity "
        "(never its secrets) and what the running agent last recorded: connected or not, its broker, its errors.",
    )
    status.add_argument("--json", action="store_true", help="machine-readable output")
    return parser


def _cmd_enroll(args, state_dir: Path) -> int:
    from edge_agent.enroll import EnrollmentFailed, enroll

    if (state_dir / "identity.json").exists() and not args.force:
        print(
            f"this device is already enrolled ({state_dir / 'identity.json'}); use --force to replace it",
            file=sys.stderr,
        )
        return 2
    try:
        identity = enroll(args.server, args.token, state_dir, kind=args.kind, name=args.name, cameras=args.camera)
    except EnrollmentFailed as exc:
        print(f"enrollment failed: {exc}", file=sys.stderr)
        return 2
    print(f"enrolled as {identity.name} ({identity.device_id}) in park {identity.site}; broker {identity.mqtt_url}")
    return 0


def _load_identity(state_dir: Path) -> DeviceIdentity | None:
    try:
        return DeviceIdentity.load(state_dir)
    except NotEnrolled as exc:
        print(exc, file=sys.stderr)
        return None


def _cmd_run(args, state_dir: Path) -> int:
    from edge_agent.agent import DEFAULT_RUNTIME_PREFERENCE, Agent

    identity = _load_identity(state_dir)
    if identity is None:
        return 2
    from edge_agent.video.spec import open_source

    cameras = {camera_id: open_source(camera_id, spec, size=None, fps=args.fps) for camera_id, spec in args.source}
    agent = Agent(
        identity,
        state_dir,
        keepalive_s=args.keepalive,
        telemetry_interval_s=args.telemetry_interval,
        reconnect_max_s=args.reconnect_max_delay,
        cameras=cameras,
        preferred_runtimes=tuple(args.runtime) or DEFAULT_RUNTIME_PREFERENCE,
        runtime_threads=args.threads,
        observe_s=args.observe,
    )
    signal.signal(signal.SIGTERM, lambda *_: agent.stop())
    signal.signal(signal.SIGINT, lambda *_: agent.stop())
    agent.run()
    return 0


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _cmd_status(args, state_dir: Path) -> int:
    from edge_agent.agent import RUNTIME_FILE
    from edge_agent.files import read_json

    identity = _load_identity(state_dir)
    if identity is None:
        return 2
    runtime = read_json(state_dir / RUNTIME_FILE, default={}) or {}
    running = bool(runtime.get("pid")) and "stopped_at" not in runtime and _pid_alive(runtime["pid"])
    report = {
        "device_id": identity.device_id,
        "name": identity.name,
        "kind": identity.kind,
        "site": identity.site,
        "server": identity.server_url,
        "broker": identity.mqtt_url,
        "running": running,
        "connected": running and bool(runtime.get("connected")),
        "pid": runtime.get("pid") if running else None,
        "last_error": runtime.get("last_error", ""),
        "telemetry_interval_s": runtime.get("telemetry_interval_s", identity.telemetry_interval_s),
        "active_model": runtime.get("active_model", ""),
        "update_state": runtime.get("update_state", ""),
        "outbox_depth": runtime.get("outbox_depth"),
        "state_updated_at": runtime.get("updated_at"),
    }
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    state = "connected" if report["connected"] else ("running, not connected" if running else "not running")
    print(f"{identity.name} ({identity.device_id}), {identity.kind} in park {identity.site}")
    print(f"  platform  {identity.server_url}")
    print(f"  broker    {identity.mqtt_url}")
    print(f"  agent     {state}" + (f" (pid {report['pid']})" if running else ""))
    print(f"  model     {report['active_model'] or 'none installed'}")
    if report["update_state"] and report["update_state"] != "idle":
        print(f"  update    {report['update_state']}")
    if report["outbox_depth"]:
        print(f"  outbox    {report['outbox_depth']} events waiting for the broker")
    if report["state_updated_at"]:
        print(f"  updated   {time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(report['state_updated_at']))}")
    if report["last_error"]:
        print(f"  last error  {report['last_error']}")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    state_dir = args.state_dir or default_state_dir()
    handler = {"enroll": _cmd_enroll, "run": _cmd_run, "status": _cmd_status}[args.command]
    return handler(args, state_dir)


if __name__ == "__main__":
    sys.exit(main())
