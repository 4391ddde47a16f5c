import random

import pytest

from edge_agent.backoff import Backoff


def test_delays_grow_exponentially_with_jitter_up_to_the_ceiling():
    backoff = Backoff(base_s=1, max_s=30, rng=random.Random(7))
    delays = [backoff.next_delay() for _ in range(10)]
    ceilings = [min(30, 2**n) for n in range(10)]
    for delay, ceiling in zip(delays, ceilings, strict=True):
        assert ceiling / 2 <= delay <= ceiling
    assert max(delays) <= 30


def test_jitter_spreads_a_fleet_reconnecting_together():
    first_retries = {round(Backoff(base_s=8, max_s=60).next_delay(), 3) for _ in range(50)}
    assert len(first_retries) > 40


def test_reset_starts_again_from_the_base():
    backoff = Backoff(base_s=1, max_s=60, rng=random.Random(1))
    for _ in range(6):
        backoff.next_delay()
    backoff.reset()
    assert backoff.next_delay() <= 1


def test_invalid_configuration_is_refused():
    with pytest.raises(ValueError):
        Backoff(base_s=0)
    with pytest.raises(ValueError):
        Backoff(base_s=10, max_s=5)
