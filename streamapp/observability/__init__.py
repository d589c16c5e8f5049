"""Metrics, faust's sensors, logs, liveness and the autoscaling gauge."""
