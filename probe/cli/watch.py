"""The loop of ``probe check --watch``: rounds, change lines or JSON lines, the status line.

``probe.judge.watch`` turns rounds into changes and a summary and ``probe.report.watch``
renders them (both pure); this module runs the rounds against the network, on their
schedule, and writes what ``probe.report.watch`` renders: change lines (or JSON lines with
``--json``), the status line refreshed in place on a terminal, and the summary.
``probe.cli.check`` checks the options and turns a reader that went away
(``BrokenPipeError``) into the exit code.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import select
import shutil
import signal
import stat
import time
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass
from typing import IO, Any

from probe.judge.watch import Change, Summary, Watch
from probe.model.results import TargetResult
from probe.report.watch import change_json, change_text, status_line, summary_json, summary_text

#: Seconds between refreshes of the status line, and between looks at whether the reader left.
REFRESH_SECONDS = 1.0

#: One round: the results of every target, one check each.
Round = Callable[[], Coroutine[Any, Any, list[TargetResult]]]


class WatchOutput:
    """Where a watch writes: change lines or JSON lines, and on a terminal the status line.

    Args:
        stream: the output (stdout).
        json_lines: write JSON lines instead of text.
        color: colour the text (ANSI).
        live: refresh a status line in place (a terminal, text only).
    """

    def __init__(self, stream: IO[str], *, json_lines: bool, color: bool, live: bool) -> None:
        self.stream = stream
        self.json_lines = json_lines
        self.color = color
        self.live = live
        self._status_shown = False

    def changes(self, changes: Sequence[Change]) -> None:
        """Write one line per change (nothing for none)."""
        if not changes:
            return
        self.clear_status()
        for change in changes:
            if self.json_lines:
                self.stream.write(json.dumps(change_json(change), ensure_ascii=False) + "\n")
            else:
                self.stream.write(change_text(change, color=self.color) + "\n")
        self.stream.flush()

    def status(self, watch: Watch, *, probing: bool) -> None:
        """Rewrite the status line in place (only when live)."""
        if not self.live:
            return
        width = 0
        with contextlib.suppress(OSError, ValueError):
            width = os.get_terminal_size(self.stream.fileno()).columns
        width = width or shutil.get_terminal_size().columns  # a terminal that reports no size: $COLUMNS or 80
        line = status_line(watch, time.time(), width, probing=probing)
        self.stream.write(f"\r\033[K{line}")
        self.stream.flush()
        self._status_shown = True

    def clear_status(self) -> None:
        """Erase the status line, if one is shown."""
        if self._status_shown:
            self.stream.write("\r\033[K")
            self.stream.flush()
            self._status_shown = False

    def summary(self, summary: Summary) -> None:
        """Write the summary (text block or one JSON line)."""
        self.clear_status()
        if self.json_lines:
            self.stream.write(json.dumps(summary_json(summary), ensure_ascii=False) + "\n")
        else:
            self.stream.write(summary_text(summary, color=self.color))
        self.stream.flush()


def reader_gone(stream: IO[str]) -> bool:
    """Whether ``stream`` is a pipe (or FIFO) whose reading end has been closed.

    ``probe check --watch | head -1``: ``head`` exits after the first line, but a watch in
    which nothing changes writes nothing more, so it would never see ``EPIPE``. The write
    end of a pipe without readers polls as ``POLLERR`` (Linux, the BSDs), which this looks
    at without writing. Any other stream (a terminal, a file, a socket) is never "gone".
    """
    try:
        fd = stream.fileno()
        if not stat.S_ISFIFO(os.fstat(fd).st_mode):
            return False
        poller = select.poll()
        poller.register(fd, 0)  # no events asked: only POLLERR / POLLHUP / POLLNVAL come back
        return any(events & select.POLLERR for _, events in poller.poll(0))
    except (OSError, ValueError, AttributeError):  # io.UnsupportedOperation: no real fd
        return False


def run_watch(
    run_round: Round,
    watch: Watch,
    output: WatchOutput,
    *,
    every: float,
    max_time: float | None,
) -> None:
    """Run rounds until ``watch`` says its ``--until`` is met, ``max_time`` passes or a signal.

    Writes each round's changes as they come and the summary at the end. ``watch`` holds
    the outcome afterwards (its ``exit_code``), also when this raises.

    Args:
        run_round: runs one round (every target once).
        watch: the watch state; observes each round.
        output: where the lines go.
        every: seconds from the start of one round to the start of the next.
        max_time: seconds the whole watch may take (it cuts a round under way), or ``None``.

    Once the watch has ended, SIGINT is ignored for the rest of the process: the command
    is over, and a second Ctrl-C as the summary is written would only lose the summary and
    the exit code (``probe.__main__`` ignores it from then on too).

    Raises:
        BrokenPipeError: the reader of the output went away (a write failed, or the pipe
            was seen without readers between rounds); no summary was written.
    """
    ended_by, round_cut = asyncio.run(_rounds(run_round, watch, output, every, max_time))
    output.summary(watch.summary(time.time(), ended_by, round_cut=round_cut))


@dataclass
class _Progress:
    """What the rounds and the status line's refresher share.

    Attributes:
        stop: set by SIGINT, SIGTERM, or the refresher when the reader went away.
        stopped: a task that ends when ``stop`` is set.
        probing: a round is under way (the status line says so).
        left: the reader of the output went away.
        cut: the watch ended while a round was under way (that round does not count).
    """

    stop: asyncio.Event
    stopped: asyncio.Task[Any]
    probing: bool = True
    left: bool = False
    cut: bool = False

    def raise_if_left(self) -> None:
        """Raise ``BrokenPipeError`` when the reader of the output went away."""
        if self.left:
            raise BrokenPipeError("the reader of the output went away")


async def _rounds(
    run_round: Round, watch: Watch, output: WatchOutput, every: float, max_time: float | None
) -> tuple[str, bool]:
    """Run rounds until one ends the watch: why it ended, and whether a round under way was cut.

    Why is one of ``probe.judge.watch.ENDED_BY``.

    A round starts ``every`` seconds after the previous one started, or at once when that
    one took longer; ``max_time`` (seconds) also cuts a round under way. SIGINT and SIGTERM
    end the watch as ``interrupted``.
    """
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    # SIGINT by a handler of the interpreter's own, never asyncio's: removing asyncio's puts
    # back the default handler, and a second Ctrl-C pending then would raise KeyboardInterrupt.
    signal.signal(signal.SIGINT, lambda *_: loop.call_soon_threadsafe(stop.set))
    ends = None if max_time is None else time.monotonic() + max_time
    progress = _Progress(stop, asyncio.create_task(stop.wait()))
    refresher = asyncio.create_task(_refresh(watch, output, progress))
    try:
        while True:
            started = time.monotonic()
            ended_by = await _one_round(run_round, watch, output, progress, ends)
            if ended_by is None:
                ended_by = await _pause(progress, started + every, ends)
            if ended_by is not None:
                return ended_by, progress.cut
    finally:
        for task in (refresher, progress.stopped):
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        loop.remove_signal_handler(signal.SIGTERM)
        # The watch has ended: a second Ctrl-C while the loop closes and the summary is
        # written would only lose the summary and the exit code.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        output.clear_status()


async def _refresh(watch: Watch, output: WatchOutput, progress: _Progress) -> None:
    """Refresh the status line every :data:`REFRESH_SECONDS`; stop the watch when the reader left."""
    while True:
        output.status(watch, probing=progress.probing)
        if reader_gone(output.stream):
            progress.left = True
            progress.stop.set()
            return
        await asyncio.sleep(REFRESH_SECONDS)


async def _one_round(
    run_round: Round, watch: Watch, output: WatchOutput, progress: _Progress, ends: float | None
) -> str | None:
    """Run one round and write its changes; why the watch ends, or ``None`` to go on.

    ``ends`` is the ``time.monotonic()`` at which ``--max-time`` cuts the round, if any.

    Raises:
        BrokenPipeError: the round was cut because the reader of the output went away.
    """
    progress.probing = True
    output.status(watch, probing=True)
    round_task = asyncio.create_task(run_round())
    budget = None if ends is None else max(0.0, ends - time.monotonic())
    done, _ = await asyncio.wait(
        {round_task, progress.stopped}, timeout=budget, return_when=asyncio.FIRST_COMPLETED
    )
    if round_task not in done:
        round_task.cancel()
        await asyncio.gather(round_task, return_exceptions=True)
        progress.raise_if_left()
        progress.cut = True
        return "interrupted" if progress.stop.is_set() else "max_time"
    progress.probing = False
    output.changes(watch.observe(round_task.result()))
    output.status(watch, probing=False)
    if watch.until_met:
        return watch.until or "ok"
    return None


async def _pause(progress: _Progress, next_start: float, ends: float | None) -> str | None:
    """Wait until ``next_start`` (``time.monotonic()``); why the watch ends, or ``None`` to go on.

    Raises:
        BrokenPipeError: the reader of the output went away meanwhile.
    """
    pause = max(0.0, next_start - time.monotonic())
    if ends is not None and time.monotonic() + pause >= ends:
        return "max_time"  # the next round could not start before --max-time
    await asyncio.wait({progress.stopped}, timeout=pause)
    progress.raise_if_left()
    if progress.stop.is_set():
        return "interrupted"
    return None
