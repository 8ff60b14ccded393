"""``probe check --help`` ends as curl's and httpie's manuals do: the exit codes, then examples."""

from __future__ import annotations

import io
import shlex
from contextlib import redirect_stdout

import pytest

from probe.cli.parser import CHECK_EXAMPLES, build_parser
from probe.model.reasons import ExitCode


def check_help() -> str:
    out = io.StringIO()
    with redirect_stdout(out), pytest.raises(SystemExit) as done:
        build_parser().parse_args(["check", "--help"])
    assert done.value.code == 0
    return out.getvalue()


def test_check_help_lists_every_exit_code_of_check() -> None:
    help_text = check_help()
    codes = help_text[help_text.index("\nexit status:\n") :].split("\n\n")[0].splitlines()[2:]
    assert codes == [
        "  0  ok",
        "  1  warning: a warning and no critical finding, or a regression since --baseline",
        "  2  critical: at least one critical finding",
        "  3  unknown: bad arguments, configuration or baseline file (one line on stderr)",
        "  5  ok, but the --push failed (a warning or critical keeps its 1 or 2)",
    ]
    # 4 is the daemon's (probe run, probe demo: cannot listen), never check's.
    assert {int(c) for c in ExitCode} - {int(line.split()[0]) for line in codes} == {ExitCode.LISTEN_FAILED}


def test_check_help_ends_with_examples_that_parse() -> None:
    help_text = check_help()
    examples = help_text[help_text.index("\nexamples:\n") :]
    assert "  probe check https://www.corp.example/health --resolver 10.0.0.2\n" in examples
    assert "      --backend-header X-Backend --expect-backends web-1,web-2 --platform aws\n" in examples
    assert "--watch --until ok" in examples and "--config /etc/probe/probe.yaml --json" in examples
    assert len(CHECK_EXAMPLES) >= 2
    for example in CHECK_EXAMPLES:
        for line in example.splitlines():
            assert f"\n  {line}\n" in examples
        words = shlex.split(example.replace("\\\n", " "))
        assert words[:2] == ["probe", "check"]
        parsed = build_parser().parse_args(words[1:])
        assert parsed.command == "check"


def test_the_descriptions_of_the_option_groups_are_still_wrapped() -> None:
    assert max(len(line) for line in check_help().splitlines() if not line.startswith("usage")) <= 100
