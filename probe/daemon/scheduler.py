"""The daemon's scheduler: one asyncio loop per target, every ``interval`` seconds.

Each target starts at a random phase offset within its interval (so targets do not fire
together) and its cycles never overlap. Results go to the store; state changes are
logged at info, each cycle at debug. The watchdog is pinged from this loop only while
no cycle is stuck past its deadline, so a hung scheduler gets restarted by systemd.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable, Iterable, Sequence

from probe._text import plural
from probe.daemon.sdnotify import Notifier
from probe.daemon.store import ResultStore, TargetState, state_changed
from probe.engine.cycle import BACKSTOP_GRACE, run_cycle
from probe.engine.plan import close_plans
from probe.model.reasons import Status
from probe.model.results import Rotation, TargetResult
from probe.stages.plan import TargetPlan

log = logging.getLogger("probe.scheduler")

#: How long in-flight cycles may take to stop on shutdown or reload (seconds).
STOP_GRACE = 3.0

#: Extra time past a cycle's deadline before the watchdog considers it stuck (seconds).
STUCK_AFTER = 5.0


class Scheduler:
    """Runs every target's cycles and keeps the store up to date.

    Args:
        plans: the prepared targets.
        store: where results go.
        notifier: systemd notifications (may be disabled).
        rng: source of the phase offsets.
        clock: Unix time, for the store's reload timestamps.
    """

    def __init__(
        self,
        plans: Sequence[TargetPlan],
        store: ResultStore,
        notifier: Notifier,
        rng: random.Random | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._plans = {p.target.name: p for p in plans}
        self._store = store
        self._notifier = notifier
        self._rng = rng or random.Random()
        self._clock = clock
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._in_flight: dict[str, float] = {}
        self._retiring: set[asyncio.Task[None]] = set()
        self._status_line = ""
        self._all_ok = False  # the last status line counted every configured target ok

    @property
    def targets(self) -> tuple[str, ...]:
        """Names of the scheduled targets."""
        return tuple(self._plans)

    async def run(self, stop: asyncio.Event) -> None:
        """Run until ``stop`` is set, then stop in-flight cycles within ``STOP_GRACE``."""
        for plan in self._plans.values():
            self._start(plan)
        watchdog = asyncio.create_task(self._watchdog()) if self._notifier.watchdog_seconds else None
        try:
            await stop.wait()
        finally:
            if watchdog is not None:
                watchdog.cancel()
            await self._cancel(list(self._tasks))
            await close_plans(self._plans.values())

    async def apply(self, plans: Sequence[TargetPlan]) -> None:
        """Switch to a new set of targets (after a successful reload).

        Targets whose configuration is unchanged keep running undisturbed; changed and
        removed ones are stopped (removed ones also disappear from the store), new and
        changed ones start at a fresh phase offset.
        """
        new = {p.target.name: p for p in plans}
        added = [name for name in new if name not in self._plans]
        removed = [name for name in self._plans if name not in new]
        stale = [
            name for name, old in self._plans.items() if name not in new or new[name].target != old.target
        ]
        await self._cancel(stale)
        # Unchanged targets keep their loop and take the new plan at their next cycle, so a
        # CA bundle replaced under the same path is picked up by a reload.
        old_plans, self._plans = list(self._plans.values()), new
        await close_plans(old_plans)  # each client once its in-flight cycle is done with it
        self._store.configure(list(new), self._clock(), reset=stale)
        self._all_ok = False
        for name, plan in new.items():
            if name not in self._tasks:
                self._start(plan)
        restarted = [name for name in stale if name in new]
        changes = {"added": added, "removed": removed, "restarted": restarted}
        log.info(
            "configuration applied",
            extra={
                "targets": len(self._plans),
                # Only the non-empty lists: a line names what changed, never prints key="".
                **{key: ",".join(names) for key, names in changes.items() if names},
                "unchanged": len(new) - len(added) - len(restarted),
            },
        )

    def _start(self, plan: TargetPlan) -> None:
        offset = self._rng.uniform(0, plan.target.interval)
        task = asyncio.create_task(self._loop(plan, offset), name=f"target {plan.target.name}")
        self._tasks[plan.target.name] = task

    async def _cancel(self, names: Sequence[str]) -> None:
        """Stop the named targets' loops: a cycle in flight may finish within ``STOP_GRACE``.

        Letting a cycle end by itself closes its connections properly; only one still
        running after the grace is cancelled.
        """
        tasks = {name: self._tasks.pop(name) for name in names if name in self._tasks}
        for name, task in tasks.items():
            if name in self._in_flight:
                self._retiring.add(task)
            else:
                task.cancel()  # between cycles: nothing to finish
        if tasks:
            _, pending = await asyncio.wait(tasks.values(), timeout=STOP_GRACE)
            for task in pending:
                task.cancel()
            if pending:
                log.warning("cycles did not finish in time and were cancelled", extra={"count": len(pending)})
                await asyncio.wait(pending, timeout=1)
        for name, task in tasks.items():
            self._retiring.discard(task)
            self._in_flight.pop(name, None)

    async def _loop(self, plan: TargetPlan, offset: float) -> None:
        name = plan.target.name
        loop = asyncio.get_running_loop()
        await asyncio.sleep(offset)
        while True:
            plan = self._plans.get(name, plan)
            started = loop.time()
            self._in_flight[name] = started
            try:
                # The interval rides along for probe_interval_seconds (the stalled-cycles alert).
                result = await run_cycle(plan, memory=self._memory(name), interval=plan.target.interval)
            finally:
                self._in_flight.pop(name, None)
            if asyncio.current_task() in self._retiring:
                return  # stopped or reconfigured while this cycle ran
            self._record(result)
            await asyncio.sleep(max(0.0, started + plan.target.interval - loop.time()))

    def _memory(self, name: str) -> Rotation | None:
        """The rotation memory the last cycle left (``probe.judge.balancing``), if any.

        ``None`` also when the target changed (the store dropped its state). Only the memory
        is taken, never the state: a state kept in the target's loop while it sleeps would
        keep the previous cycle's result and metrics text alive beside the current ones
        (twice the memory per target).
        """
        state = self._store.state(name)
        return state.result.rotation if state is not None else None

    def _record(self, result: TargetResult) -> None:
        previous = self._store.record(result)
        if log.isEnabledFor(logging.DEBUG):  # not built for every cycle only to be dropped
            log.debug(
                "cycle done",
                extra={
                    "target": result.target.name,
                    "status": result.status.value,
                    "duration_seconds": round(result.duration_seconds, 3),
                    "reasons": ",".join(r.value for r in result.reasons),
                },
            )
        before = previous.result if previous else None
        if state_changed(before, result):  # the same rule as the status page's history
            reasons = ",".join(r.value for r in result.reasons)
            # Every target's first result is logged, ok ones too: the log then shows that
            # each target (also one added by a reload) has been probed.
            log.info(
                "target status changed" if before is not None else "first result",
                extra={
                    "target": result.target.name,
                    "previous": before.status.value if before else "none",
                    "status": result.status.value,
                    "reasons": reasons,
                },
            )
        if self._all_ok and before is not None and result.status is Status.OK:
            return  # every target was ok and this one still is: the line is the same
        self._update_status()

    def _update_status(self) -> None:
        """Recompute the status line (a pass over every target) and send it when it changed."""
        states = list(self._store.states())
        line = status_line(states, len(self._plans))
        self._all_ok = len(states) == len(self._plans) and all(s.result.status is Status.OK for s in states)
        if line != self._status_line:
            self._status_line = line
            self._notifier.status(line)

    async def _watchdog(self) -> None:
        period = (self._notifier.watchdog_seconds or 0) / 2
        loop = asyncio.get_running_loop()
        while True:
            stuck = [
                name
                for name, started in self._in_flight.items()
                if name in self._plans
                and loop.time() - started
                > self._plans[name].target.timeouts.deadline + BACKSTOP_GRACE + STUCK_AFTER
            ]
            dead = [name for name, task in self._tasks.items() if task.done()]
            if stuck or dead:
                log.error(
                    "not pinging the watchdog",
                    extra={"stuck": ",".join(stuck), "stopped": ",".join(dead)},
                )
            else:
                self._notifier.watchdog()
            await asyncio.sleep(period)


def status_line(states: Iterable[TargetState], configured: int) -> str:
    """``"3 targets: 2 ok, 1 critical (www: backend_missing)"`` for ``systemctl status``."""
    results = [s.result for s in states]
    counts = {status: sum(r.status is status for r in results) for status in Status}
    parts = [f"{n} {status.value}" for status, n in counts.items() if n]
    waiting = configured - len(results)
    if waiting > 0:
        parts.append(f"{waiting} waiting for a first cycle")
    line = f"{plural(configured, 'target')}: {', '.join(parts) or 'none probed yet'}"
    bad = [r for r in results if r.status is not Status.OK]
    if bad:
        worst = max(bad, key=lambda r: r.status.rank)
        line += f" ({worst.target.name}: {','.join(r.value for r in worst.reasons)})"
    return line[:200]
