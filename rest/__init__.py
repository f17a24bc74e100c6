"""The REST channel used by scripts, load tests and web clients."""
