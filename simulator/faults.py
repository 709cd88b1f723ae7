"""Every random decision of the simulator, drawn from one generator so a seed repeats a run."""

from __future__ import annotations

import hashlib
import random

from simulator.config import LatencySampler, parse_latency

ODD_STATUSES = ("queued_for_gpu", "warming_up", "scheduling")


class Dice:
    """Decides injected faults, task latencies and odd statuses."""

    def __init__(self, seed: int | None, latency_spec: str) -> None:
        self.rng = random.Random(seed)
        self._seed = seed
        self._latency: LatencySampler = parse_latency(latency_spec)

    def reseed(self, seed: int | None) -> None:
        """Restart the generator, so the same requests meet the same faults again."""
        self.rng = random.Random(seed)
        self._seed = seed

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

    def spoil_draw(self, task_id: str, rate: float) -> int | None:
        """With probability ``rate``, a number saying how to break the task's answer (None: keep
        it whole). Hashed from the task id and the seed rather than drawn from the generator, so
        every poll of a task sees the same answer and a resubmission (a new task) draws afresh."""
        if rate <= 0:
            return None
        digest = hashlib.sha256(f"{self._seed}:{task_id}".encode()).digest()
        if int.from_bytes(digest[:7]) / 2**56 >= rate:
            return None
        return int.from_bytes(digest[7:11])

    def latency(self) -> float:
        """Seconds until a new task is ready (never negative)."""
        return max(0.0, self._latency(self.rng))

    def odd_status(self) -> str:
        """A status string GeekAI does not document, which clients must tolerate."""
        return self.rng.choice(ODD_STATUSES)
