"""Where an MQTT broker is and how to log in to it, parsed from one URL.

``mqtt://user:password@host:1883`` (plain TCP) or ``mqtts://...:8883`` (TLS with the system's
trusted CAs). Shared by the platform and the agent; paho is imported only by the callers.
"""

from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

_DEFAULT_PORTS = {"mqtt": 1883, "tcp": 1883, "mqtts": 8883, "ssl": 8883}


@dataclass(frozen=True)
class BrokerAddress:
    host: str
    port: int
    username: str | None = None
    password: str | None = None
    tls: bool = False

    @classmethod
    def from_url(cls, url: str) -> "BrokerAddress":
        parts = urlsplit(url)
        if parts.scheme not in _DEFAULT_PORTS:
            raise ValueError(f"MQTT URL {url!r} must start with mqtt:// or mqtts://")
        if not parts.hostname:
            raise ValueError(f"MQTT URL {url!r} has no host")
        try:
            port = parts.port or _DEFAULT_PORTS[parts.scheme]
        except ValueError:
            raise ValueError(f"MQTT URL {url!r} has an invalid port") from None
        return cls(
            host=parts.hostname,
            port=port,
            username=unquote(parts.username) if parts.username else None,
            password=unquote(parts.password) if parts.password else None,
            tls=parts.scheme in ("mqtts", "ssl"),
        )

    def url(self) -> str:
        """The address without credentials: safe to log and to hand to devices."""
        return f"{'mqtts' if self.tls else 'mqtt'}://{self.host}:{self.port}"

    def configure(self, client) -> None:
        """Apply credentials and TLS to a paho client."""
        if self.username:
            client.username_pw_set(self.username, self.password)
        if self.tls:
            client.tls_set()
