"""The ``probe`` command: argument parsing, the commands, and errors turned into exit codes."""
