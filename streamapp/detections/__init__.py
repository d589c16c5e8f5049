"""Detections as data: specs (spec.py), the engine (engine.py), offline runs (testing.py), control topic."""
