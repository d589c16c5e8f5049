"""The worker's one transaction is open again after every rebalance."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from streamapp.runtime.transactions import WorkerTransactionManager


class _Txn:
    def __init__(self, open_: bool) -> None:
        self.open = open_

    def is_in_transaction(self) -> bool:
        return self.open


class _Producer:
    def __init__(self, open_: bool) -> None:
        self.txn = _Txn(open_)
        self._transaction_producers = {"tid": SimpleNamespace(_txn_manager=self.txn)}
        self.begun: list[str] = []

    async def maybe_begin_transaction(self, transactional_id: str) -> None:
        self.begun.append(transactional_id)
        self.txn.open = True


def _manager(producer: _Producer) -> Any:
    return SimpleNamespace(producer=producer, transactional_id="tid")


async def test_a_transaction_ended_by_the_rebalance_is_begun_again() -> None:
    # faust's wait_empty at revocation commits with start_new_transaction=False
    producer = _Producer(open_=False)
    await WorkerTransactionManager.on_rebalance(_manager(producer), set(), set(), set())
    assert producer.begun == ["tid"] and producer.txn.open


async def test_an_open_transaction_is_left_alone() -> None:
    producer = _Producer(open_=True)
    await WorkerTransactionManager.on_rebalance(_manager(producer), set(), set(), set())
    assert producer.begun == []
