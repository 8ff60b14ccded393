"""User regexes are compiled by RE2: linear time, Go's syntax, refused at load with one line."""

from __future__ import annotations

import re
import subprocess
import sys
import time

import pytest

from probe.config.fields import LinearRegex, compile_regex
from tests.support.helpers import REPO, environment_without_proxies

#: (pattern, text) pairs of the kinds probe's rules use: the backend named by group 1, a
#: body_regex searched anywhere in the body. RE2 and Python's re agree on each.
SAME_AS_RE = [
    (r"served by (\S+)", "<p>served by web-1</p>\n"),
    (r"served by (\S+?)<", "<p>served by web-2</p>"),
    (r'"status":\s*"ok"', '{"id": 1, "status": "ok"}'),
    (r"(?i)HEALTHY", "all healthy"),
    (r"^served", "served by web-1\n"),
    (r"node=([a-z0-9-]+)", "x node=ip-10-0-1-7 y"),
    (r"<h1>(.*)</h1>", "<html><h1>web-3</h1></html>"),
    (r"<h1>(.*)</h1>", "<h1>" * 100),
    (r"(?m)^status: (\w+)$", "a: b\nstatus: up\nc: d"),
    (r"served by (\S+)", "servi par web-1"),
    (r"(x)?served by (\S+)", "served by web-4"),
    (r"backend (\S+)", "backend wéb-1 — ok"),
]


@pytest.mark.parametrize(("pattern", "text"), SAME_AS_RE)
def test_search_finds_what_re_finds(pattern: str, text: str) -> None:
    expected = re.search(pattern, text)
    got = LinearRegex(pattern).search(text.encode())
    if expected is None:
        assert got is None
    else:
        assert got == (expected.group(0), *expected.groups())


def test_a_backtracking_pattern_over_hostile_text_takes_linear_time() -> None:
    # re takes seconds here (quadratic in the number of <h1>); RE2 well under a millisecond.
    text = b"<h1>" * 16384
    regex = LinearRegex(r"<h1>(.*)</h1>")
    start = time.perf_counter()
    assert regex.search(text) is None
    assert time.perf_counter() - start < 0.5


def test_equal_and_hashed_by_pattern_as_re_pattern_is() -> None:
    assert LinearRegex(r"a(\d+)") == LinearRegex(r"a(\d+)")
    assert LinearRegex("a") != LinearRegex("b")
    assert len({LinearRegex("a"), LinearRegex("a")}) == 1
    assert LinearRegex(r"a(\d+)(x)?").groups == 2
    assert compile_regex(LinearRegex("a")) == LinearRegex("a")


@pytest.mark.parametrize(
    ("pattern", "lacks"),
    [
        (r"(a)\1", "RE2 has no backreferences"),
        (r"a(?=b)", "RE2 has no lookahead"),
        (r"a(?!b)", "RE2 has no lookahead"),
        (r"(?<=a)b", "RE2 has no lookbehind"),
        (r"(?<!a)b", "RE2 has no lookbehind"),
        (r"a++", "RE2 has no possessive repetition"),
        (r"ok\Z", r"the end of the text is \z in RE2"),
        (r"a{1001}", "invalid repetition size: {1001}"),
        ("(", "missing ): ("),
    ],
)
def test_what_re2_refuses_is_one_line_naming_why(pattern: str, lacks: str) -> None:
    with pytest.raises(ValueError) as caught:
        compile_regex(pattern)
    message = str(caught.value)
    assert message.startswith("not a regular expression in RE2 syntax (as blackbox_exporter): ")
    assert lacks in message and "\n" not in message


def test_a_refused_regex_prints_nothing_of_re2s_own() -> None:
    # RE2 logs its complaint to stderr unless told not to: nothing a library prints reaches the user.
    code = (
        "from probe.config.fields import compile_regex\n"
        "try:\n    compile_regex('(a)\\\\1')\nexcept ValueError:\n    pass"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=environment_without_proxies(),
        timeout=60,
    )
    assert done.returncode == 0 and done.stdout == "" and done.stderr == ""


def test_not_a_string_is_refused() -> None:
    with pytest.raises(ValueError, match="must be a regular expression string"):
        compile_regex(5)
