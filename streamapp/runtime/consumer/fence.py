"""The zombie fence: a fetched batch writes its state only while this worker is known to be in its group.

A worker paused longer than the session timeout (``SIGSTOP``, a long GC, a frozen VM) has lost its
partitions to another worker when it resumes, but it does not know yet: its heartbeat has not
been answered. Meanwhile it would finish the batch it was handling, and the records it had
fetched, from its stale local state, and write table values into the changelog *after* the new
owner's, overwriting newer counts (and its RocksDB would remember a changelog offset past the new
owner's writes). At-least-once has no broker-side fencing, so the worker fences itself:

- membership is *trusted* for half the session timeout after it was last confirmed (a heartbeat
  answered, or an assignment received): within it the broker cannot have expired this member;
- past it, the check asks the group coordinator now (one heartbeat): answered, the batch goes on;
  refused (unknown member, stale generation), the batch is given up (:class:`MembershipLost`, a
  :class:`NotProcessed`): nothing written, nothing acknowledged, read again by the partition's
  owner; no answer (the coordinator is moving), it asks again until an answer or a rebalance;
- a rebalance that ended since the fetch (another generation) gives the batch up too.

The check runs when a fetch is handed over and again just before a batch writes its states
(:func:`check_membership`, called by the detectors between their last ``await`` and their
RocksDB writes), so a pause anywhere in the handling is caught. What it cannot catch is a pause
in the few milliseconds between that check and the producer's send.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
from collections.abc import Awaitable, Callable
from time import monotonic
from typing import Any, Protocol

from aiokafka.protocol.group import JoinGroupRequest

from streamapp.runtime.consumer.errors import NotProcessed
from streamapp.runtime.faust_compat import group_coordinator, heartbeat

__all__ = [
    "GroupMember",
    "Membership",
    "MembershipLost",
    "aiokafka_group_member",
    "check_membership",
    "done_handling",
    "handling_batch",
]

logger = logging.getLogger(__name__)

#: how long an unanswered membership question waits before it is asked again
RETRY_SECONDS = 0.5
#: how long a batch waits for the coordinator to answer at all before it is given up
GIVE_UP_SECONDS = 30.0


class MembershipLost(NotProcessed):
    """This worker may no longer own the batch's partitions: the batch is not written, not acknowledged."""


class GroupMember(Protocol):
    """What the fence needs of the consumer's group membership (aiokafka's coordinator)."""

    @property
    def generation(self) -> int:
        """The group generation this member is in (-1 once the coordinator refused it)."""
        ...

    def is_member(self) -> bool:
        """False once the coordinator said it does not know this member (it must rejoin)."""
        ...

    async def heartbeat(self) -> bool:
        """Ask the coordinator now; True if it knows this member in its current generation."""
        ...


class Membership:
    """When this worker last knew it was in its group, and the check a batch passes before writing."""

    def __init__(
        self,
        member: Callable[[], GroupMember | None],
        session_timeout: float,
        *,
        clock: Callable[[], float] = monotonic,
        retry_seconds: float = RETRY_SECONDS,
        give_up_seconds: float = GIVE_UP_SECONDS,
    ) -> None:
        self._member = member
        #: half the session timeout: a member confirmed this recently cannot have been expired
        self.trust_seconds = session_timeout / 2
        self._clock = clock
        self._retry_seconds = retry_seconds
        self._give_up_seconds = give_up_seconds
        self._confirmed_at: float | None = None
        self._abandoned = asyncio.Event()

    def confirm(self) -> None:
        """The coordinator has just acknowledged this member (a heartbeat answered, an assignment)."""
        self._confirmed_at = self._clock()
        self._abandoned = asyncio.Event()

    def abandon(self) -> None:
        """A rebalance or a stop waits for the batches: checks waiting for an answer give up."""
        self._abandoned.set()

    def generation(self) -> int | None:
        """The member's generation now (None before the consumer has started)."""
        member = self._member()
        return None if member is None else member.generation

    async def check(self, generation: int | None) -> None:
        """Return if the batch fetched in ``generation`` may write; raise :class:`MembershipLost` if not."""
        member = self._member()
        if member is None:  # no group consumer (not started yet): nothing to fence against
            return
        if generation is not None and member.generation != generation:
            raise MembershipLost(f"the group moved from generation {generation} to {member.generation}")
        if not member.is_member():
            raise MembershipLost("the group coordinator no longer knows this worker")
        if self._confirmed_at is not None and self._clock() - self._confirmed_at <= self.trust_seconds:
            return
        await self._ask(member, generation)

    async def _ask(self, member: GroupMember, generation: int | None) -> None:
        """Membership is in doubt (not confirmed for half the session timeout): ask the coordinator."""
        started = self._clock()
        last_confirmed = self._confirmed_at
        while True:
            abandoned = self._abandoned
            if await member.heartbeat():
                if generation is not None and member.generation != generation:
                    raise MembershipLost(f"the group moved on from generation {generation}")
                self.confirm()
                return
            if not member.is_member():
                silent = (
                    "" if last_confirmed is None else f" after {started - last_confirmed:.1f} s unconfirmed"
                )
                logger.warning(
                    "this worker was not in its consumer group any more%s (paused past the session "
                    "timeout?): the batch in hand is not written; its partitions' owner reads it again",
                    silent,
                )
                raise MembershipLost("the group coordinator no longer knows this worker")
            if abandoned.is_set() or self._clock() - started > self._give_up_seconds:
                raise MembershipLost("the group coordinator did not confirm this worker's membership")
            try:  # the coordinator is unreachable or moving: ask again (a rebalance ends the wait)
                await asyncio.wait_for(abandoned.wait(), self._retry_seconds)
            except TimeoutError:
                pass


#: the membership and generation of the fetch being handled (set by the batch consumer)
_handling: contextvars.ContextVar[tuple[Membership, int | None] | None] = contextvars.ContextVar(
    "streamapp_batch_membership", default=None
)


def handling_batch(membership: Membership, generation: int | None) -> contextvars.Token[Any]:
    """Mark the current task as handling a batch fetched in ``generation`` (for :func:`check_membership`)."""
    return _handling.set((membership, generation))


def done_handling(token: contextvars.Token[Any]) -> None:
    """The current task's batch is handled (undoes :func:`handling_batch`)."""
    _handling.reset(token)


async def check_membership() -> None:
    """Raise :class:`MembershipLost` if the batch being handled must not be written (see the module).

    Call it after a handler's last ``await`` before its RocksDB writes; without an ``await`` of its
    own while membership is trusted, nothing runs between it and the writes. Outside a fetch
    handed over by the batch consumer (an agent's stream, a unit test) it does nothing.
    """
    handling = _handling.get()
    if handling is not None:
        await handling[0].check(handling[1])


# -- aiokafka's coordinator: private attributes, in one place ------------------------------------
class _AiokafkaGroupMember:
    """aiokafka 0.14's group coordinator as a :class:`GroupMember`.

    aiokafka has no public "am I still a member" call: the coordinator's ``generation`` and
    ``member_id`` (what faust reads too), and one heartbeat (streamapp.runtime.faust_compat):
    refused, it requests a rejoin, so asking also starts the rebalance that moves this worker on.

    faust runs the aiokafka consumer on an event loop of its own thread: the heartbeat is sent
    there (``in_consumer_thread``, faust's ``call_thread``); the attributes are only read.
    """

    def __init__(
        self, coordinator: Any, in_consumer_thread: Callable[[Callable[[], Awaitable[Any]]], Awaitable[Any]]
    ) -> None:
        self._coordinator = coordinator
        self._in_consumer_thread = in_consumer_thread

    @property
    def generation(self) -> int:
        return int(self._coordinator.generation)

    def is_member(self) -> bool:
        return bool(self._coordinator.member_id != JoinGroupRequest.UNKNOWN_MEMBER_ID)

    async def heartbeat(self) -> bool:
        try:
            return bool(await self._in_consumer_thread(heartbeat(self._coordinator)))
        except Exception as exc:  # e.g. no coordinator known right now: no answer yet
            logger.debug("heartbeat for the zombie fence failed: %r", exc)
            return False


def aiokafka_group_member(faust_consumer_thread: Any) -> GroupMember | None:
    """The group membership behind faust's consumer thread (None before it has a coordinator).

    The heartbeat runs on the consumer thread's own event loop (faust's ``call_thread``).
    """
    coordinator = group_coordinator(faust_consumer_thread)
    if coordinator is None:
        return None
    return _AiokafkaGroupMember(coordinator, faust_consumer_thread.call_thread)
