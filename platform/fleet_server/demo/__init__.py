"""The one-command demo: starts the platform's processes and simulated devices on one machine."""
