"""The scenarios: throughput rounds, event-to-alert latency, changelog recovery and restart, profile."""
