"""Enrollment: trade a one-time claim token for the device's identity, over HTTP(S)."""

import json
import time
import urllib.error
import urllib.request
from pathlib import Path

from edge_agent import __version__
from edge_agent.identity import DeviceIdentity, generate_device_key, public_key_b64, save_device_key
from edge_agent.telemetry import hardware_info
from model_store.crypto import CryptoError, import_public_keys


class EnrollmentFailed(Exception):
    pass


def enroll(
    server_url: str,
    token: str,
    state_dir: Path,
    *,
    kind: str,
    name: str = "",
    cameras: list[tuple[str, str]] = (),
    timeout_s: float = 30.0,
) -> DeviceIdentity:
    """Generate the device key, register its public half, store identity and key (mode 0600)."""
    key = generate_device_key()
    request_body = {
        "token": token,
        "name": name,
        "kind": kind,
        "public_key": public_key_b64(key),
        "agent_version": __version__,
        "hardware": hardware_info(),
        "cameras": [{"camera_id": camera_id, "name": label} for camera_id, label in cameras],
    }
    url = server_url.rstrip("/") + "/api/v1/enroll/"
    if not url.startswith(("http://", "https://")):
        raise EnrollmentFailed(f"--server must be an http:// or https:// URL, got {server_url!r}")
    request = urllib.request.Request(  # noqa: S310 - the scheme is checked above
        url,
        data=json.dumps(request_body).encode(),
        headers={"Content-Type": "application/json", "Accept": "application/json"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:  # noqa: S310
            answer = json.loads(response.read())
    except urllib.error.HTTPError as exc:
        raise EnrollmentFailed(f"the platform refused the enrollment ({exc.code}): {_detail(exc)}") from None
    except (urllib.error.URLError, TimeoutError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise EnrollmentFailed(f"cannot reach the platform at {server_url}: {reason}") from None
    mqtt = answer["mqtt"]
    identity = DeviceIdentity(
        device_id=answer["device_id"],
        name=answer["name"],
        kind=kind,
        site=answer["site"],
        server_url=server_url.rstrip("/"),
        mqtt_url=mqtt["url"],
        mqtt_username=mqtt["username"],
        mqtt_password=mqtt["password"],
        mqtt_client_id=mqtt["client_id"],
        keepalive_s=int(mqtt["keepalive_s"]),
        telemetry_interval_s=float(answer["telemetry_interval_s"]),
        enrolled_at=time.time(),
        signing_keys=_signing_keys(answer),
    )
    save_device_key(state_dir, key)
    identity.save(state_dir)
    return identity


def _signing_keys(answer: dict) -> dict[str, str]:
    """The signing keys to pin, checked now so that a bad answer fails the enrollment, not a later deploy."""
    keys = answer.get("signing_keys")
    if not isinstance(keys, dict) or not keys:
        raise EnrollmentFailed(
            "the platform sent no package-signing keys to pin: upgrade the platform and enroll again"
        )
    try:
        import_public_keys(keys)
    except CryptoError as exc:
        raise EnrollmentFailed(f"the platform sent an unusable package-signing key: {exc}") from None
    return dict(keys)


def _detail(error: urllib.error.HTTPError) -> str:
    try:
        body = json.loads(error.read())
    except (ValueError, OSError):
        return error.reason
    if isinstance(body, dict):
        if "detail" in body:
            return str(body["detail"])
        return "; ".join(
            f"{field}: {' '.join(map(str, msgs)) if isinstance(msgs, list) else msgs}" for field, msgs in body.items()
        )
    return str(body)
