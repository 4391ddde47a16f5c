"""The device agent: enrolls with the platform, keeps an MQTT session, reports health, runs commands.

Installs with the ``agent`` extra only: no Django, no torch.
"""

__version__ = "0.1.0"
