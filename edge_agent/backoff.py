"""Exponential back-off with jitter, so a fleet reconnecting after a broker restart spreads out."""

import random


class Backoff:
    def __init__(self, base_s: float = 1.0, max_s: float = 60.0, rng: random.Random | None = None):
        if base_s <= 0 or max_s < base_s:
            raise ValueError("need 0 < base_s <= max_s")
        self.base_s = base_s
        self.max_s = max_s
        self.attempts = 0
        self._rng = rng or random.Random()

    def next_delay(self) -> float:
        """Half the ceiling fixed, half random ('equal jitter'): never a thundering herd, never a hot loop."""
        ceiling = min(self.max_s, self.base_s * 2**self.attempts)
        self.attempts += 1
        return ceiling / 2 + self._rng.uniform(0, ceiling / 2)

    def reset(self) -> None:
        self.attempts = 0
