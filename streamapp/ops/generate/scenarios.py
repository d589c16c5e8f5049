"""The traffic scenarios: background events clear of every rule, incidents injected at known times.

Every scenario makes one second of traffic per call ("tick"): background events that stay clear
of every detection rule by construction, plus incidents whose decisive event is recorded as an
:class:`Incident` the moment it is emitted, so a run's incidents are exactly what the detectors
must report:

- ``logins``: many IPs and users, rare failures (an IP fails at most once a minute, a user at most
  once in five, and retries successfully); a brute-force burst from a fresh attacker IP every 10 s;
  an account takeover every 15 s (four failures for a fresh user from four IPs, then a success).
- ``sensors``: every sensor reports once a second around 20 °C (uniform ±0.6, std 0.35); every
  20 s a fresh sensor joins and reads 103-110 after 8 s (high_temperature, too few readings for an
  anomaly); from 36 s on, every 20 s one sensor with 30+ readings jumps by +6 °C (anomaly).
- ``transactions``: many cards, each spending 0.5-2 x its own typical amount (5-80 overall, so never
  10 x its mean) and at most twice a minute; every 15 s a fresh card makes 8 purchases in 3 s
  (card_velocity); every 20 s a fresh card's last six purchases (one per 15 s of event time, sent
  late as one batch so its 60-s count stays at most 4) are followed by one of 20 x their mean.
- ``stocks``: random-walk prices of ten symbols; analytics only, no incidents.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterator
from typing import Any

from streamapp.ops.generate.generator import Incident, Maker, Record, SensorsState, TrafficGenerator

__all__ = ["SCENARIOS", "login_traffic", "sensor_traffic", "stock_traffic", "transaction_traffic"]

# Fresh keys for incidents come from counters in ranges background traffic never uses; the
# counters start at a random offset so that runs against the same state do not reuse keys.
_ATTACKER_NETS = ("203.0.113", "198.51.100", "192.0.2")  # documentation ranges
_USERS = 100_000  # background users user00000..user99999; victims have seven digits
_SENSOR_FRESH = 100_000  # background sensors sensor-0000..; fresh ones from sensor-100000
_CARDS_MAX = 4_000_000  # background cards card-0000000..; fresh ones from card-5000000
_MERCHANTS = ("grocer", "fuel", "cafe", "pharmacy", "books", "transit", "hardware", "cinema", "bakery")
_COUNTRIES = ("US", "GB", "DE", "FR", "NL", "ES", "IT", "CA")


def login_traffic(gen: TrafficGenerator, now: float, per_second: int, second: int) -> Iterator[Record]:
    """One second of logins: many IPs and users, rare failures; brute-force and takeover incidents."""
    rng, state = gen.rng, gen.logins
    for i in range(per_second):
        ts = round(now + i / per_second, 3)
        ip = f"10.{rng.randrange(4)}.{rng.randrange(256)}.{rng.randrange(1, 255)}"
        user = f"user{rng.randrange(_USERS):05d}"
        # a failure only where it cannot add up to an alert; otherwise the login succeeds
        success = (
            rng.random() > 0.03
            or not state.failed_ips.ready(ip, ts)
            or not state.failed_users.ready(user, ts)
        )
        if not success:
            state.failed_ips.use(ip, ts)
            state.failed_users.use(user, ts)
            # a mistyped password, retried successfully a moment later
            retry = Record("logins", ip, {"ip": ip, "user": user, "success": True})
            gen.later(second, now, i / per_second + rng.uniform(1.0, 4.0), retry)
        yield Record("logins", ip, {"ts": ts, "ip": ip, "user": user, "success": success})

    if second % 10 == 3:
        # brute force: 12 failed logins in 0.6 s from a fresh IP; the 6th makes it fire
        state.attackers = gen.fresh(state.attackers, 254 * len(_ATTACKER_NETS))
        net, host = divmod(state.attackers, 254)
        attacker = f"{_ATTACKER_NETS[net]}.{host + 1}"
        for i in range(12):
            attempt = {"ip": attacker, "user": ("root", "admin", "oracle")[i % 3], "success": False}
            fires = ("brute_force", attacker) if i == 5 else None
            gen.later(second, now, i * 0.05, Record("logins", attacker, attempt), fires)

    if second % 15 == 5:
        # account takeover: 4 failed logins for a fresh user from 4 IPs (no IP near brute force),
        # then a success; the success comes a second after the last failure so it arrives after
        state.victims = gen.fresh(state.victims, 9_000_000)
        victim = f"user{1_000_000 + state.victims}"
        ip = ""
        for i in range(4):
            state.stuffing_ips = gen.fresh(state.stuffing_ips, 1 << 22)
            ip = _shared_address(state.stuffing_ips)
            failure = {"ip": ip, "user": victim, "success": False}
            gen.later(second, now, i * 0.8, Record("logins", ip, failure))
        takeover = {"ip": ip, "user": victim, "success": True}
        gen.later(second, now, 3.5, Record("logins", ip, takeover), ("account_takeover", victim))

    yield from gen.due("logins", second)


def _shared_address(n: int) -> str:
    """The ``n``-th address of 100.64.0.0/10 (carrier-grade NAT; never used by the background)."""
    return f"100.{64 + (n >> 16) % 64}.{(n >> 8) & 255}.{n & 255}"


def sensor_traffic(gen: TrafficGenerator, now: float, per_second: int, second: int) -> Iterator[Record]:
    """One second of readings: ``per_second`` sensors report once each; heat and anomaly incidents."""
    rng, state = gen.rng, gen.sensors
    while len(state.bases) < per_second:
        state.bases.append(rng.uniform(19.5, 20.5))
        state.readings.append(0)
    anomalous = _next_anomalous(state, second) if second >= 36 and (second - 36) % 20 == 0 else -1
    for i in range(per_second):
        ts = round(now + i / per_second, 3)
        sensor = f"sensor-{i:04d}"
        temperature = state.bases[i] + rng.uniform(-0.6, 0.6)
        if i == anomalous:
            # +6 degC against a history std of ~0.35: ~17 standard deviations, far below 100
            temperature = state.bases[i] + 6.0 + rng.uniform(-0.3, 0.3)
            state.last_anomaly[i] = second
            gen.incidents.append(Incident("temperature_anomaly", sensor, ts))
        state.readings[i] += 1
        yield Record(
            "sensor-readings", sensor, {"ts": ts, "sensor_id": sensor, "temperature": round(temperature, 2)}
        )

    if second % 20 == 2:
        # a fresh sensor joins, reports 8 normal readings (too few for an anomaly), then reads >100
        state.fresh = gen.fresh(state.fresh, 800_000)
        sensor = f"sensor-{_SENSOR_FRESH + state.fresh}"
        base = rng.uniform(19.5, 20.5)
        for k in range(8):
            reading = {"sensor_id": sensor, "temperature": round(base + rng.uniform(-0.6, 0.6), 2)}
            gen.later(second, now, k + 0.5, Record("sensor-readings", sensor, reading))
        hot = {"sensor_id": sensor, "temperature": round(rng.uniform(103.0, 110.0), 1)}
        gen.later(second, now, 8.5, Record("sensor-readings", sensor, hot), ("high_temperature", sensor))

    yield from gen.due("sensor-readings", second)


def _next_anomalous(state: SensorsState, second: int) -> int:
    """A background sensor with history enough for an anomaly and none in the last 2 min, or -1."""
    count = len(state.bases)
    for k in range(count):
        i = (state.next_anomaly + k) % count
        # 30 readings are needed; a few more, as the newest may still be on their way
        if state.readings[i] >= 33 and second - state.last_anomaly.get(i, -(10**9)) >= 120:
            state.next_anomaly = i + 1
            return i
    return -1


def transaction_traffic(gen: TrafficGenerator, now: float, per_second: int, second: int) -> Iterator[Record]:
    """One second of card transactions over many cards; velocity and amount-spike incidents."""
    rng, state = gen.rng, gen.cards
    pool = min(_CARDS_MAX, max(2_000, per_second * 120))
    for i in range(per_second):
        ts = round(now + i / per_second, 3)
        for _ in range(20):
            card = f"card-{rng.randrange(pool):07d}"
            if state.recent.ready(card, ts):
                break
        else:
            continue  # every card drawn was used in the last 30 s: leave this one out
        state.recent.use(card, ts)
        if card not in state.bases:
            state.bases[card] = rng.uniform(10.0, 40.0)
        yield Record(
            "transactions", card, {"ts": ts, **_purchase(rng, card, _amount(rng, state.bases[card]))}
        )

    if second % 15 == 7:
        # card velocity: 8 purchases in 2.8 s on a fresh card; the 6th makes it fire
        card = _fresh_card(gen)
        base = rng.uniform(10.0, 40.0)
        for k in range(8):
            purchase = Record("transactions", card, _purchase(rng, card, _amount(rng, base)))
            gen.later(second, now, k * 0.4, purchase, ("card_velocity", card) if k == 5 else None)

    if second % 20 == 9:
        # amount spike: a fresh card's last six purchases, one every 15 s of event time (so no 60 s
        # holds more than 4 with the spike), arrive late in one batch; 2 s later one of 20 x their mean
        card = _fresh_card(gen)
        base = rng.uniform(10.0, 40.0)
        amounts = [_amount(rng, base) for _ in range(6)]
        for k, amount in enumerate(amounts):
            gen.later(
                second, now, -15.0 * (6 - k), Record("transactions", card, _purchase(rng, card, amount))
            )
        spike = _purchase(rng, card, round(20 * sum(amounts) / len(amounts), 2))
        gen.later(second, now, 2.0, Record("transactions", card, spike), ("amount_spike", card))

    yield from gen.due("transactions", second)


def _amount(rng: random.Random, typical: float) -> float:
    # 0.5-2 x the card's typical amount: the largest is at most 4 x the smallest, never 10 x the mean
    return round(typical * rng.uniform(0.5, 2.0), 2)


def _purchase(rng: random.Random, card: str, amount: float) -> dict[str, Any]:
    value: dict[str, Any] = {"txn_id": f"{rng.getrandbits(64):016x}", "card_id": card, "amount": amount}
    if rng.random() < 0.9:  # merchant and country are optional
        value["merchant"] = rng.choice(_MERCHANTS)
        value["country"] = rng.choice(_COUNTRIES)
    return value


def _fresh_card(gen: TrafficGenerator) -> str:
    gen.cards.fresh = gen.fresh(gen.cards.fresh, 4_000_000)
    return f"card-{5_000_000 + gen.cards.fresh:07d}"


def stock_traffic(gen: TrafficGenerator, now: float, per_second: int, second: int) -> Iterator[Record]:
    """One second of ticks: the symbols take turns, each price a geometric random walk."""
    rng, state = gen.rng, gen.stocks
    symbols = list(state.prices)
    for i in range(per_second):
        symbol = symbols[state.turn % len(symbols)]
        state.turn += 1
        price = max(0.01, state.prices[symbol] * math.exp(rng.gauss(0.0, 0.0008)))
        state.prices[symbol] = price
        ts = round(now + i / per_second, 3)
        yield Record("stock-prices", symbol, {"ts": ts, "symbol": symbol, "price": round(price, 2)})


SCENARIOS: dict[str, list[Maker]] = {
    "all": [login_traffic, sensor_traffic, transaction_traffic, stock_traffic],
    "logins": [login_traffic],
    "sensors": [sensor_traffic],
    "transactions": [transaction_traffic],
    "stocks": [stock_traffic],
}
