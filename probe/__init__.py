"""probe: end-to-end checks of an HTTPS service behind an internal load balancer."""

__version__ = "0.1.0"


def main() -> int:
    """The ``probe`` command (and ``python -m probe``): :func:`probe.cli.main`, loaded here.

    Loading :mod:`probe.cli` takes tens of milliseconds at start-up; a Ctrl-C then (as in
    ``timeout -s INT 0.05 probe check …``) ends the command as a Ctrl-C later does: the
    line ``probe: interrupted`` and exit code 3, not a traceback from the import.

    Returns:
        The exit code.
    """
    try:
        from probe.cli import main as cli_main
    except KeyboardInterrupt:
        import sys

        print("probe: interrupted", file=sys.stderr)
        return 3  # ExitCode.UNKNOWN, as probe.cli.main on a Ctrl-C (reasons is not loaded yet)
    return cli_main()
