"""The check every test is held to: a simulator's peaks against its source's configured limits."""

from __future__ import annotations

from pipeline.sandbox import SohoSimulator
from pipeline.sandbox.meter import LoadMeter
from pipeline.settings import SourceSettings
from tests.source_limits import LimitWatch


def _settings(**limits: object) -> SourceSettings:
    return SourceSettings.model_validate({"base_url": "http://127.0.0.1:1", **limits})


def test_a_peak_at_the_limits_passes_and_one_above_fails_naming_the_source() -> None:
    sim = SohoSimulator(customers=1)
    watch = LimitWatch()
    watch.expect(sim, "soho", _settings(max_concurrency=2, requests_per_second=3))
    for _ in range(2):
        sim.load.started()
    for _ in range(2):
        sim.load.finished()
        sim.load.started()  # four starts within a second, two at a time
    assert sim.peak_in_flight == 2 and sim.peak_per_second == 4
    assert watch.violations() == [
        "soho: the simulator saw 4 requests start within one second; requests_per_second = 3"
    ]
    sim.load.started()
    assert "3 requests in flight at once; max_concurrency = 2" in watch.violations()[0]


def test_defaults_count_and_a_simulator_configured_twice_is_held_to_the_looser() -> None:
    sim = SohoSimulator(customers=1)
    watch = LimitWatch()
    watch.expect(sim, "soho", _settings(max_concurrency=1))
    for _ in range(4):
        sim.load.started()
    assert len(watch.violations()) == 1
    watch.expect(sim, "soho", _settings())  # the default cap, 4; no rate limit
    assert watch.violations() == []
    sim.load.started()
    assert watch.violations() == [
        "soho: the simulator saw 5 requests in flight at once; max_concurrency = 4"
    ]


def test_a_simulator_no_settings_point_at_is_not_checked() -> None:
    sim = SohoSimulator(customers=1)
    for _ in range(10):
        sim.load.started()
    assert LimitWatch().violations() == []


def test_each_account_of_a_server_is_held_to_its_instance_and_the_server_to_their_sum() -> None:
    a, b = (SohoSimulator(customers=1).as_account(name) for name in ("soho_a", "soho_b"))
    server = LoadMeter()
    watch = LimitWatch()
    watch.expect(a, "soho_a", _settings(max_concurrency=2), server)
    watch.expect(b, "soho_b", _settings(max_concurrency=1), server)
    for _ in range(3):
        server.started()  # e.g. a revoked token's requests: no account claimed them
    assert watch.violations() == []
    b.load.started()
    b.load.started()
    server.started()
    assert watch.violations() == [
        "the server of soho_a, soho_b: saw 4 requests in flight at once; their "
        "max_concurrency add up to 3",
        "soho_b: the simulator saw 2 requests in flight at once; max_concurrency = 1",
    ]
