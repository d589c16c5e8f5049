"""`streamapp replay`: rebuild every table from the source topics into a fresh app id, with progress."""

from streamapp.ops.replay.command import *  # noqa: F403
from streamapp.ops.replay.offsets import *  # noqa: F403
from streamapp.ops.replay.plan import *  # noqa: F403
from streamapp.ops.replay.progress import *  # noqa: F403
from streamapp.ops.replay.switch_over import *  # noqa: F403
from streamapp.ops.replay.worker import *  # noqa: F403
