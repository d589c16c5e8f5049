"""logins_by_user: per user, recent failed-login times (account_takeover state)."""

from __future__ import annotations

from tables.base import define_table

__all__ = ["logins_by_user"]

logins_by_user = define_table("logins-by-user", help="user -> {failures: [ts], last, src}")
