"""Input events and alerts: parsing and validation of the contract's JSON records."""

from streamapp.models import alerts, envelopes, events, fields, parsers
from streamapp.models.alerts import *  # noqa: F403
from streamapp.models.envelopes import *  # noqa: F403
from streamapp.models.events import *  # noqa: F403
from streamapp.models.fields import *  # noqa: F403
from streamapp.models.parsers import *  # noqa: F403

__all__ = [
    *alerts.__all__,
    *envelopes.__all__,
    *events.__all__,
    *fields.__all__,
    *parsers.__all__,
]
