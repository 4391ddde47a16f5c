"""The platform's side of MQTT: the ingest of device messages and the transactional outbox of commands."""
