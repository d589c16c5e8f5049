"""failed_logins_by_ip: per IP, failed logins in 10-s event-time buckets (brute_force state)."""

from __future__ import annotations

from tables.base import define_table

__all__ = ["failed_logins_by_ip"]

failed_logins_by_ip = define_table(
    "failed-logins-by-ip",
    help="IP -> {buckets: [[start, failed]], alerted, clock, src}",
)
