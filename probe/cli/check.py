"""``probe check``: probe once (or watch), print the report, compare and save baselines, push.

:func:`command` checks the options that need each other, then runs one check (with the
head start of :mod:`probe.cli.head_start` when it applies) or a watch
(:mod:`probe.cli.watch`), and returns the verdict's exit code. The baseline
(:mod:`probe.judge.baseline`) and the Pushgateway client (:mod:`probe.cli.push`) are
imported only when their options are given.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from probe._text import printable
from probe.cli.adhoc import config_from_args
from probe.cli.cycles import check_once, plan_targets, run_all
from probe.cli.errors import UsageError
from probe.cli.head_start import check_ahead, head_start
from probe.cli.output import report, stdout_to_devnull, use_color
from probe.config.defaults import DEFAULT_EVERY, DEFAULT_STABLE_ROUNDS

if TYPE_CHECKING:
    from probe.cli.push import Gateway
    from probe.config.models import Config, TargetConfig
    from probe.judge.baseline import Baseline
    from probe.model.results import TargetResult
    from probe.stages.plan import TargetPlan


def command(args: argparse.Namespace, stdout: IO[str]) -> int:
    """Run ``probe check`` with the parsed ``args``, writing to ``stdout``.

    Returns:
        The exit code: the verdict (0 ok, 1 warning, 2 critical; a regression since
        ``--baseline`` makes it at least 1), 5 when only the push failed.

    Raises:
        UsageError: options that cannot be combined or values the parser could not check.
        ConfigError: a config file that cannot be used.
        BaselineError: a ``--baseline`` that cannot be used.
    """
    _check_watch_options(args)
    gateway = _gateway(args)
    if args.watch:
        return _watch(plan_targets(config_from_args(args)), args, stdout)
    ahead = head_start(args)
    if ahead is not None:
        import asyncio

        return _finish(asyncio.run(check_ahead(args, ahead)), args, stdout, gateway)
    return _run_and_report(config_from_args(args), args, stdout, gateway)


def _check_watch_options(args: argparse.Namespace) -> None:
    """Refuse watch options that cannot apply: without ``--watch``, or ``--stable-rounds`` alone."""
    if not args.watch:
        for flag in ("--every", "--until", "--stable-rounds", "--max-time"):
            if getattr(args, flag.removeprefix("--").replace("-", "_")) is not None:
                raise UsageError(f"{flag} needs --watch")
        return
    for flag in ("--baseline", "--save-baseline"):
        if getattr(args, flag.removeprefix("--").replace("-", "_")) is not None:
            raise UsageError(
                f"{flag} cannot be combined with --watch (save a baseline with one check before "
                "the change, watch it land, then compare with one check after)"
            )
    if args.stable_rounds is not None:
        if args.until != "stable":
            raise UsageError("--stable-rounds needs --until stable")
        if args.stable_rounds < 2:
            raise UsageError(f"--stable-rounds: must be at least 2 (got {args.stable_rounds})")


def _gateway(args: argparse.Namespace) -> Gateway | None:
    """The ``--push`` target, checked before anything is probed; ``None`` without ``--push``.

    probe.cli.push (httpx, the metrics renderer) is loaded only when ``--push`` is given.
    """
    if args.push is None:
        for flag in ("--push-job", "--push-label"):
            if getattr(args, flag.removeprefix("--").replace("-", "_")) is not None:
                raise UsageError(f"{flag} needs --push")
        return None
    if args.watch:
        raise UsageError(
            "--push cannot be combined with --watch (push the outcome with one check after the watch)"
        )
    from probe.cli import push

    try:
        return push.parse_gateway(args.push, args.push_job, args.push_label or ())
    except push.PushUsageError as exc:
        raise UsageError(str(exc)) from None


def _watch(plans: Sequence[TargetPlan], args: argparse.Namespace, stdout: IO[str]) -> int:
    """``probe check --watch``: rounds until ``--until``, ``--max-time`` or Ctrl-C, then a summary.

    The exit code is the last round's verdict (0, 1, 2), 3 when no round completed. Ctrl-C
    (SIGINT) and SIGTERM end the watch with the summary, never a traceback; a reader that
    went away (``| head -1``) ends it quietly with the verdict so far.
    """
    from probe.cli.watch import WatchOutput, run_watch
    from probe.judge.watch import Watch

    stable = args.stable_rounds if args.stable_rounds is not None else DEFAULT_STABLE_ROUNDS
    watch = Watch(time.time(), until=args.until, stable_rounds=stable, max_time_seconds=args.max_time)
    output = WatchOutput(
        stdout,
        json_lines=args.json,
        color=not args.json and use_color(args.color, stdout),
        live=not args.json and stdout.isatty(),
    )
    try:
        previous: list[TargetResult] = []  # the rotation memory goes from round to round

        async def one_round() -> list[TargetResult]:
            nonlocal previous
            previous = await run_all(plans, previous)
            return previous

        run_watch(
            one_round,
            watch,
            output,
            every=args.every if args.every is not None else DEFAULT_EVERY,
            max_time=args.max_time,
        )
    except BrokenPipeError:
        # The reader went away: stop watching; the verdict so far stands.
        stdout_to_devnull()
    return watch.exit_code


def _run_and_report(
    config: Config, args: argparse.Namespace, stdout: IO[str], gateway: Gateway | None = None
) -> int:
    import asyncio

    before = _read_baseline(config.targets, args.baseline)
    if args.save_baseline:
        from probe.judge import baseline

        baseline.check_writable(args.save_baseline, _files_read(config, args))
    results = asyncio.run(check_once(config))
    return _finish(results, args, stdout, gateway, before)


def _finish(
    results: Sequence[TargetResult],
    args: argparse.Namespace,
    stdout: IO[str],
    gateway: Gateway | None,
    before: Baseline | None = None,
) -> int:
    """Compare with the baseline, print the report, save the baseline, push: the exit code."""
    comparison = None
    if before is not None:
        from probe.judge import baseline

        comparison = baseline.compare(before, results, args.baseline)
    code = report(results, args, stdout, comparison)
    if args.save_baseline:
        from probe.judge import baseline

        document = baseline.snapshot(results, time.time())
        baseline.save(args.save_baseline, document)
        print(f"probe: {_saved_text(args.save_baseline, document)}", file=sys.stderr)
    if gateway is not None:  # after the report: a slow gateway never delays the verdict
        from probe.cli.push import push_after_report

        code = push_after_report(results, gateway, code)
    return code


def _files_read(config: Config, args: argparse.Namespace) -> list[tuple[str, Path]]:
    """The files a check reads, which ``--save-baseline`` must not replace, each with what it is."""
    files = [("the --config file", Path(args.config))] if args.config else []
    for target in config.targets:
        client = target.tls_client
        named = {
            "ca_file": target.ca_file,
            "tls_client.cert_file": client and client.cert_file,
            "tls_client.key_file": client and client.key_file,
            "tls_client.key_password_file": client and client.key_password_file,
        }
        files += [(f"the {key} of {target.name}", path) for key, path in named.items() if path]
    return files


def _saved_text(path: str, document: Mapping[str, Any]) -> str:
    """Where ``--save-baseline`` wrote and what, for stderr (without the ``probe:`` prefix).

    ``baseline saved to before.json: www (https://www.corp.example/) at 10.0.2.31, 10.0.3.31``;
    with several targets ``baseline saved to b.json: 2 targets: www (…) at …; api (…) at …``.

    Args:
        path: the file as given.
        document: the baseline document written (:func:`probe.judge.baseline.snapshot`).
    """
    targets = [
        f"{t['name']} ({t['url']}) at {', '.join(t['addresses']) or 'no address'}"
        for t in document["targets"]
    ]
    many = f"{len(targets)} targets: " if len(targets) != 1 else ""
    return printable(f"baseline saved to {path}: {many}{'; '.join(targets)}")


def _read_baseline(targets: Sequence[TargetConfig], path: str | None) -> Baseline | None:
    """The ``--baseline`` file, refused before anything is probed when it cannot be used.

    ``targets`` are the checked targets (matched by URL and server name).
    probe.judge.baseline (cryptography, pydantic models) is imported only with ``--baseline``.
    """
    if path is None:
        return None
    from probe.judge import baseline

    before = baseline.load(path)
    baseline.match(before, targets, path)
    return before
