"""Shell completion: the scripts ``probe completion bash|zsh`` prints complete in real shells.

bash: the script is sourced and its function called with ``COMP_WORDS``/``COMP_CWORD`` set as
bash sets them on Tab. zsh: an interactive ``zsh -f`` in a pseudo-terminal (``zsh/zpty``)
with ``compinit`` loads the script, Tab is typed, and the matches the completion system adds
are captured (by wrapping ``compadd``). Both shells are Debian packages ``./dev test`` installs.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

import pytest

from tests.support.helpers import probe_cli

#: Calls ``_probe`` with the words given as arguments, the last one being completed.
_BASH = r"""
source "$1"; shift
COMP_WORDS=("$@"); COMP_CWORD=$(( ${#COMP_WORDS[@]} - 1 )); COMPREPLY=()
_probe
printf '%s\n' "${COMPREPLY[@]}"
complete -p probe
"""

#: Loaded into the interactive zsh: every match the completion system adds is printed.
_ZSH_COMPADD = r"""
compadd () {
    if [[ ${@[1,(i)(-|--)]} == *-(O|A|D)\ * ]]; then builtin compadd "$@"; return $?; fi
    typeset -a __hits
    builtin compadd -A __hits "$@"
    local h
    for h in $__hits; do print -r -- "<<$h>>"; done
}
"""

#: ``zsh -f capture.zsh SCRIPT LINE COMPADD``: type LINE and Tab in an interactive zsh, print the matches.
_ZSH = r"""
zmodload zsh/zpty
zpty z zsh -f -i
zpty -w z "PROMPT='PR> '; autoload -U compinit; compinit -u -D"
zpty -w z "source ${(q)1}"
zpty -w z "source ${(q)3}"
zpty -w z "bindkey '^I' complete-word"
# The echo of the command shows RE""ADY, only its output READY; then wait for the prompt,
# so that the line and Tab reach the line editor, not the terminal's typeahead.
zpty -w z 'print -r -- RE""ADY'
zpty -r z line '*READY*PR> '
zpty -w -n z "$2"$'\t'
zpty -w z $'\C-u''print -r -- DO""NE'
local out
zpty -r z out '*DONE*'
print -r -- "$out" | grep -o '<<[^>]*>>' | sort -u
zpty -d z
"""


def shell(name: str) -> str:
    found = shutil.which(name)
    if found is None:
        pytest.skip(f"{name} is not installed (./dev test installs it)")
    return found


@pytest.fixture(scope="module")
def scripts(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    where = tmp_path_factory.mktemp("completion")
    made = {}
    for kind in ("bash", "zsh"):
        done = probe_cli("completion", kind)
        assert done.returncode == 0 and done.stderr == ""
        made[kind] = where / ("_probe" if kind == "zsh" else "probe.bash")
        made[kind].write_text(done.stdout)
    return made


def bash_complete(scripts: dict[str, Path], *words: str) -> list[str]:
    done = subprocess.run(
        [shell("bash"), "--norc", "--noprofile", "-c", _BASH, "bash", str(scripts["bash"]), *words],
        capture_output=True,
        text=True,
        timeout=10,
        check=False,
    )
    assert done.returncode == 0 and done.stderr == "", done.stderr
    *replies, registration = done.stdout.splitlines()
    assert registration == "complete -F _probe probe"
    return sorted(r for r in replies if r)


def zsh_complete(scripts: dict[str, Path], line: str, tmp_path: Path) -> list[str]:
    capture = tmp_path / "capture.zsh"
    capture.write_text(_ZSH)
    compadd = tmp_path / "compadd.zsh"
    compadd.write_text(_ZSH_COMPADD)
    done = subprocess.run(
        [shell("zsh"), "-f", str(capture), str(scripts["zsh"]), line, str(compadd)],
        capture_output=True,
        text=True,
        timeout=20,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return [m.removeprefix("<<").removesuffix(">>") for m in done.stdout.split()]


def test_bash_completes_check_res_to_resolve_and_resolver(scripts: dict[str, Path]) -> None:
    start = time.monotonic()
    assert bash_complete(scripts, "probe", "check", "--res") == ["--resolve", "--resolver"]
    assert time.monotonic() - start < 5


@pytest.mark.parametrize(
    ("words", "expected"),
    [
        (("probe", ""), ["check", "completion", "demo", "run", "share"]),
        (("probe", "--ver"), ["--version"]),
        (("probe", "check", "--ip-family", ""), ["both", "ipv4", "ipv6"]),
        (("probe", "check", "--color", "=", "al"), ["always"]),  # --color=al, split at '=' by bash
        (("probe", "check", "--resolver", ""), []),  # a free value: nothing to offer
        (("probe", "run", "--web"), ["--web.client-timeout", "--web.config.file"]),
        (("probe", "completion", ""), ["bash", "zsh"]),
        (("probe", "share", "systemd/"), ["systemd/probe.service"]),
    ],
)
def test_bash_completes_commands_options_and_values(
    scripts: dict[str, Path], words: tuple[str, ...], expected: list[str]
) -> None:
    assert bash_complete(scripts, *words) == expected


def test_bash_completes_file_names_after_config(scripts: dict[str, Path], tmp_path: Path) -> None:
    (tmp_path / "probe.yaml").write_text("targets: []\n")
    assert bash_complete(scripts, "probe", "check", "--config", str(tmp_path / "pro")) == [
        str(tmp_path / "probe.yaml")
    ]


def test_zsh_completes_check_res_to_resolve_and_resolver(scripts: dict[str, Path], tmp_path: Path) -> None:
    start = time.monotonic()
    assert zsh_complete(scripts, "probe check --res", tmp_path) == ["--resolve", "--resolver"]
    assert time.monotonic() - start < 20  # the capture itself is bounded by its 20 s timeout


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("probe ", ["check", "completion", "demo", "run", "share"]),
        ("probe check --ip-family ", ["both", "ipv4", "ipv6"]),
        ("probe completion ", ["bash", "zsh"]),
        ("probe share sys", ["systemd/probe.service"]),
    ],
)
def test_zsh_completes_commands_and_values(
    scripts: dict[str, Path], tmp_path: Path, line: str, expected: list[str]
) -> None:
    assert zsh_complete(scripts, line, tmp_path) == expected


def test_the_completion_scripts_name_every_option_of_every_command() -> None:
    from probe.cli.parser import build_parser

    parser = build_parser()
    bash = probe_cli("completion", "bash").stdout
    zsh = probe_cli("completion", "zsh").stdout
    for name, command in parser.commands.items():
        for action in command._actions:
            for flag in action.option_strings:
                if flag.startswith("--"):
                    assert f" {flag}" in bash or f'"{flag}' in bash, (name, flag)
                    assert f"{flag}[" in zsh, (name, flag)


def test_completion_for_another_shell_is_refused_in_one_line() -> None:
    done = probe_cli("completion", "fish")
    assert done.returncode == 3 and done.stdout == ""
    assert done.stderr.startswith("probe: argument shell: invalid choice: 'fish'")
    assert len(done.stderr.splitlines()) == 1
