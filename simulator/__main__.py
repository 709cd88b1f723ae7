"""``python -m simulator``."""

from simulator.cli import simulate

simulate(prog_name="python -m simulator")
