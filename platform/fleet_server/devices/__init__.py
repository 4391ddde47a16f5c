"""The device registry: parks (sites), devices and their cameras, enrollment, presence, telemetry, commands."""
