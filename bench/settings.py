"""What one benchmark run does: the figures of ``./dev bench``, and of ``--smoke``."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Settings:
    """What one run does; ``--smoke`` shrinks every number."""

    targets: int = 1000
    interval: float = 30.0
    window: float = 60.0
    scrapes: int = 50
    slow_interval: float = 5.0
    fidelity_samples: int = 6
    fidelity_scrape_every: float = 15.0
    startup_repeats: int = 5
    smoke: bool = False
    #: probe's ``requests_per_address`` for the N targets; blackbox_exporter then answers as
    #: many ``/probe`` per address-probe (each a connection and a handshake of its own).
    requests: int = 1
    #: The probe tree that ``probe run`` and ``probe check`` import (``PYTHONPATH``), e.g. a
    #: ``git archive`` of main, to alternate trees against the same harness; ``None``: this one.
    tree: str | None = None

    @classmethod
    def smoke_run(cls) -> Settings:
        """A few seconds of everything: checks the harness, not the speed."""
        return cls(
            targets=10,
            interval=2.0,
            window=4.0,
            scrapes=5,
            slow_interval=1.0,
            fidelity_samples=2,
            fidelity_scrape_every=1.0,
            startup_repeats=1,
            smoke=True,
        )
