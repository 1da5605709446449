"""Operating the daemon: status, rejects, health and metrics, as plain functions the CLI and the HTTP endpoint call."""
