"""Scenario: every chosen contender on the same data, for several rounds in a rotating order; medians."""

from __future__ import annotations

import logging
import statistics
from dataclasses import dataclass, field
from functools import partial

from bench.contenders import CONTENDERS, HEAD_TO_HEAD
from bench.data import Dataset
from bench.harness import Bench, Outcome, guarded

__all__ = ["Versus", "head_to_head", "throughput"]

logger = logging.getLogger("bench")


@dataclass
class Versus:
    """One contender's rate ÷ another's: the median of the ratios taken within each round."""

    name: str
    other: str
    target: float  # the ratio the issue asks for (reported, never judged by the bench)
    ratio: float | None = None
    rounds: list[float | None] = field(default_factory=list)

    @property
    def met(self) -> bool | None:
        return None if self.ratio is None else self.ratio >= self.target


def head_to_head(per_round: dict[str, list[Outcome]]) -> list[Versus]:
    """HEAD_TO_HEAD's ratios for the pairs that both ran: within each round, then the median."""
    out = []
    for key, other_key, target in HEAD_TO_HEAD:
        mine, theirs = per_round.get(key), per_round.get(other_key)
        if not mine or not theirs:
            continue
        ratios = [a.rate / b.rate if a.rate and b.rate else None for a, b in zip(mine, theirs, strict=False)]
        measured = [r for r in ratios if r is not None]
        versus = Versus(mine[0].name, theirs[0].name, target, rounds=ratios)
        versus.ratio = statistics.median(measured) if measured else None
        out.append(versus)
    return out


def throughput(
    bench: Bench, data: Dataset, prefix: str, contenders: list[str], rounds: int
) -> tuple[list[Outcome], list[Versus]]:
    """One figure per contender (in CONTENDERS' order): its median round, with its ratio to streamapp;
    and the head-to-head ratios of HEAD_TO_HEAD, each taken within a round."""
    chosen = [key for key in CONTENDERS if key in contenders]
    per_round: dict[str, list[Outcome]] = {key: [] for key in chosen}
    for round_no in range(1, rounds + 1):
        bench.round = round_no
        if rounds > 1:
            logger.info("══ throughput round %d of %d", round_no, rounds)
        shift = (round_no - 1) % len(chosen)  # each round in another order: no contender always first
        for key in chosen[shift:] + chosen[:shift]:
            label, measure = CONTENDERS[key]
            outcome = guarded(label, partial(measure, bench, data, prefix), partial(_failed, label))
            per_round[key].append(outcome)
            logger.info(
                "   %s: %s events/s (%s)",
                label,
                f"{outcome.rate:,.0f}" if outcome.rate else "—",
                outcome.status,
            )
    bench.round = 1
    base_rounds = per_round.get("streamapp", [])
    versus = head_to_head(per_round)  # before the medians: they change the chosen rounds' details
    return [_median_outcome(per_round[key], base_rounds) for key in chosen], versus


def _failed(name: str, reason: str) -> Outcome:
    return Outcome(name).fail(reason)


def _median_outcome(outcomes: list[Outcome], base: list[Outcome]) -> Outcome:
    """The round with the median rate, carrying every round's rate and the median of the per-round
    ratios to streamapp (each ratio from one round, where the two ran minutes apart)."""
    measured = sorted((o for o in outcomes if o.rate), key=lambda o: o.rate or 0.0)
    chosen = measured[(len(measured) - 1) // 2] if measured else outcomes[0]
    chosen.rounds = [o.rate for o in outcomes]
    ratios = [o.rate / b.rate for o, b in zip(outcomes, base, strict=False) if o.rate and b.rate]
    chosen.ratio = statistics.median(ratios) if ratios else None
    if len(outcomes) > 1:
        chosen.detail["rounds"] = " / ".join(f"{r:,.0f}" if r else "—" for r in chosen.rounds) + " events/s"
        for n, o in enumerate(outcomes, 1):
            if o.status != "ok":
                chosen.detail[f"round {n}"] = f"{o.status}: {o.reason}"
    return chosen
