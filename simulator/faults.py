"""Every random decision of the simulator, drawn from one generator so a seed repeats a run."""

from __future__ import annotations

import random

from simulator.config import LatencySampler, parse_latency

ODD_STATUSES = ("queued_for_gpu", "warming_up", "scheduling")


class Dice:
    """Decides injected faults, task latencies and odd statuses."""

    def __init__(self, seed: int | None, latency_spec: str) -> None:
        self.rng = random.Random(seed)
        self._latency: LatencySampler = parse_latency(latency_spec)

    def reseed(self, seed: int | None) -> None:
        """Restart the generator, so the same requests meet the same faults again."""
        self.rng = random.Random(seed)

    def set_latency(self, spec: str) -> None:
        """Switch to another task-latency distribution."""
        self._latency = parse_latency(spec)

    def roll(self, rate: float) -> bool:
        """True with probability ``rate``; draws nothing when the rate is 0 or 1."""
        if rate <= 0:
            return False
        if rate >= 1:
            return True
        return self.rng.random() < rate

    def latency(self) -> float:
        """Seconds until a new task is ready (never negative)."""
        return max(0.0, self._latency(self.rng))

    def odd_status(self) -> str:
        """A status string GeekAI does not document, which clients must tolerate."""
        return self.rng.choice(ODD_STATUSES)
