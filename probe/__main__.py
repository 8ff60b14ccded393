"""The ``probe`` command and ``python -m probe``: a launcher that loads :mod:`probe.cli.main`."""

import signal
import sys


def main() -> int:
    """The ``probe`` command (and ``python -m probe``): :func:`probe.cli.main.main`, loaded here.

    Loading :mod:`probe.cli.main` takes tens of milliseconds at start-up; a Ctrl-C then (as
    in ``timeout -s INT 0.05 probe check …``) ends the command as a Ctrl-C later does: the
    line ``probe: interrupted`` and exit code 3, not a traceback from the import. A Ctrl-C
    once the command has returned is ignored: its exit code stands.

    Returns:
        The exit code.
    """
    try:
        from probe.cli.main import main as cli_main
    except KeyboardInterrupt:
        print("probe: interrupted", file=sys.stderr)
        return 3  # ExitCode.UNKNOWN, as probe.cli.main.main on a Ctrl-C (reasons is not loaded yet)
    code = cli_main()
    # The command is over and its exit code decided: a Ctrl-C from now on (a second one
    # pressed as a watch prints its summary, while the interpreter exits) would only turn
    # that code into a KeyboardInterrupt traceback or a death by SIGINT.
    try:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    except KeyboardInterrupt:  # pressed just before: raised as the call starts
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    return code


if __name__ == "__main__":
    sys.exit(main())
