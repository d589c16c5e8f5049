"""The per-record path: ingest (parse, validate, re-key) and alerting."""
