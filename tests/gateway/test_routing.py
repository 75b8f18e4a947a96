"""The router: strategies order deployments, failures cool them down, latency is averaged."""

from __future__ import annotations

import random
from collections import Counter

from pilothouse.gateway.config import DeploymentConfig, GatewayConfig, ModelConfig, PriceOverride
from pilothouse.gateway.prices import PriceBook
from pilothouse.gateway.routing import Router


class Ticker:
    """A monotonic clock the test moves."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def dep(name: str, **kw: object) -> DeploymentConfig:
    return DeploymentConfig(name=name, provider="demo", model="demo-1", **kw)  # type: ignore[arg-type]


def ids(deployments: list[DeploymentConfig]) -> list[str]:
    return [d.id for d in deployments]


def test_exact_aliases_win_over_globs_and_globs_match_in_order() -> None:
    router = Router(
        [
            ModelConfig(alias="claude-*", deployments=[dep("glob")]),
            ModelConfig(alias="claude-x", deployments=[dep("exact")]),
        ]
    )
    assert (router.resolve("claude-x") or ModelConfig(alias="-", deployments=[dep("-")])).alias == (
        "claude-x"
    )
    found = router.resolve("claude-opus-4-8")
    assert found is not None and found.alias == "claude-*"
    assert router.resolve("gpt-4o") is None


def test_priority_orders_lowest_first() -> None:
    model = ModelConfig(
        alias="m", deployments=[dep("b", priority=2), dep("a", priority=1), dep("c", priority=3)]
    )
    assert ids(Router([model]).order(model)) == ["a", "b", "c"]


def test_weighted_leads_in_proportion_and_zero_weight_only_falls_back() -> None:
    model = ModelConfig(
        alias="m",
        strategy="weighted",
        deployments=[dep("heavy", weight=3), dep("light", weight=1), dep("spare", weight=0)],
    )
    router = Router([model], rng=random.Random(7))
    leads = Counter(router.order(model)[0].id for _ in range(4000))
    assert leads["spare"] == 0
    assert 2.5 < leads["heavy"] / leads["light"] < 3.5
    assert all(router.order(model)[-1].id == "spare" for _ in range(50))


def test_lowest_cost_puts_the_cheapest_first_and_unpriced_last() -> None:
    model = ModelConfig(
        alias="m",
        strategy="lowest-cost",
        deployments=[
            dep("dear", price=PriceOverride(input=5, output=50)),
            DeploymentConfig(name="unpriced", provider="demo", model="no-such-model"),
            dep("cheap", price=PriceOverride(input=1, output=2)),
        ],
    )
    router = Router([model], prices=PriceBook({}, "test"))
    assert ids(router.order(model)) == ["cheap", "dear", "unpriced"]


def test_lowest_latency_measures_each_then_prefers_the_fastest_moving_average() -> None:
    model = ModelConfig(
        alias="m", strategy="lowest-latency", deployments=[dep("a"), dep("b"), dep("c")]
    )
    router = Router([model], GatewayConfig(latency_smoothing=0.5))
    router.succeeded(model.deployments[0], 100)
    router.succeeded(model.deployments[1], 50)
    assert ids(router.order(model))[0] == "c"  # never measured: tried first
    router.succeeded(model.deployments[2], 80)
    assert ids(router.order(model)) == ["b", "c", "a"]
    router.succeeded(model.deployments[1], 250)  # b's average: 50 + 0.5 * (250 - 50) = 150
    assert router.health(model.deployments[1]).latency_ms == 150
    assert ids(router.order(model)) == ["c", "a", "b"]


def test_consecutive_failures_cool_a_deployment_until_its_time_is_up() -> None:
    ticker = Ticker()
    model = ModelConfig(alias="m", deployments=[dep("a", priority=0), dep("b", priority=1)])
    router = Router(
        [model], GatewayConfig(breaker_failures=2, breaker_cooldown_seconds=30), monotonic=ticker
    )
    a = model.deployments[0]
    router.failed(a)
    assert ids(router.order(model)) == ["a", "b"]  # one failure: still tried
    router.failed(a)
    assert ids(router.order(model)) == ["b"]
    ticker.now += 29
    assert ids(router.order(model)) == ["b"]
    ticker.now += 1.5
    assert ids(router.order(model)) == ["a", "b"]  # the probe
    router.failed(a)  # the probe failed: cooled again at once
    assert ids(router.order(model)) == ["b"]
    ticker.now += 31
    router.succeeded(a, 10)
    router.failed(a)
    assert ids(router.order(model)) == ["a", "b"]  # a success reset the count


def test_a_long_retry_after_cools_at_once_and_a_short_one_does_not() -> None:
    ticker = Ticker()
    model = ModelConfig(alias="m", deployments=[dep("a")])
    router = Router([model], GatewayConfig(max_retry_after_seconds=5), monotonic=ticker)
    router.failed(model.deployments[0], retry_after=2)
    assert ids(router.order(model)) == ["a"]
    router.failed(model.deployments[0], retry_after=60)
    assert router.order(model) == []
    assert 59 < router.cooling(model) <= 60
    ticker.now += 61
    assert ids(router.order(model)) == ["a"]
