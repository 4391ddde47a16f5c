#!/usr/bin/env python
"""Django's command-line utility for the fleet platform.

``platform/`` is a plain folder (``platform`` is a stdlib module), so it goes on sys.path here
and ``fleet_server`` is imported from it.
"""

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent


def main() -> None:
    sys.path.insert(0, str(ROOT / "platform"))
    sys.path.insert(1, str(ROOT))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "fleet_server.settings")
    from django.core.management import execute_from_command_line

    execute_from_command_line(sys.argv)


if __name__ == "__main__":
    main()
