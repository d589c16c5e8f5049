"""Operator tools: traffic generator, demo, dead-letter tools, replay."""
