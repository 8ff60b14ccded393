"""Unknown options: the closest known one, judged without the dashes every option shares."""

from __future__ import annotations

import pytest

from probe.cli.errors import UsageError
from probe.cli.parser import build_parser, unrecognized


@pytest.mark.parametrize(
    ("command", "extras", "suggested"),
    [
        ("check", ["--resolvers"], "--resolver"),
        ("check", ["--ca_file=x.pem"], "--ca-file"),
        ("check", ["--expect-backend", "2"], "--expect-backends"),
        ("check", ["URL2", "--insecur"], "--insecure"),
        ("run", ["--web-config-file"], "--web.config.file"),
        ("demo", ["--onse"], "--once"),
    ],
)
def test_the_closest_option_of_the_subcommand_is_suggested(
    command: str, extras: list[str], suggested: str
) -> None:
    parser = build_parser().commands[command]
    message = unrecognized(parser, extras)
    assert message == f"unrecognized arguments: {' '.join(extras)}; did you mean {suggested}?"


@pytest.mark.parametrize("extras", [["--bogus"], ["--x"], ["surplus"], ["-z"]])
def test_nothing_is_suggested_when_nothing_is_close(extras: list[str]) -> None:
    message = unrecognized(build_parser().commands["check"], extras)
    assert message == f"unrecognized arguments: {' '.join(extras)}"


def test_the_parser_itself_raises_with_the_subcommand_help() -> None:
    with pytest.raises(UsageError, match=r"did you mean --json\? \(see 'probe check --help'\)$"):
        build_parser().parse_args(["check", "--jsonn"])
