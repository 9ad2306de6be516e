"""The daemon's one Redis breaker takes the strictest of the resources' settings."""

from __future__ import annotations

from memoryd.cli import breaker_settings
from memoryd.config.model import CircuitBreaker, MemoryResource, Persistence, Project


def project(*breakers: CircuitBreaker, embedded: CircuitBreaker | None = None) -> Project:
    res = {f"r{i}": MemoryResource(id=f"r{i}", persistence=Persistence(circuit_breaker=b))
           for i, b in enumerate(breakers)}
    if embedded is not None:
        res["e"] = MemoryResource(id="e", persistence=Persistence(type="embedded", circuit_breaker=embedded))
    return Project(id="p", resources=res, agents={})


def test_defaults_without_resources_using_redis() -> None:
    assert breaker_settings(project(embedded=CircuitBreaker(0.01, 1, 99))) == CircuitBreaker()


def test_strictest_combination_of_resource_breakers() -> None:
    got = breaker_settings(project(CircuitBreaker(0.5, 5, 10.0), CircuitBreaker(0.2, 8, 30.0),
                                   embedded=CircuitBreaker(0.01, 1, 99.0)))
    assert got == CircuitBreaker(timeout_s=0.2, max_failures=5, reset_timeout_s=30.0)
