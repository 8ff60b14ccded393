"""Defaults that the command line shows without loading the configuration machinery.

``probe --help`` must start fast: reading them here keeps pydantic and the probe stages
out of it (the config models and :mod:`probe.config.load` use them too).
"""

from typing import Final

#: Where ``probe run`` and ``probe demo`` serve ``/metrics`` unless told otherwise.
DEFAULT_LISTEN = "127.0.0.1:9798"

#: What ``probe check --watch --until`` accepts (``probe.judge.watch`` checks against it).
UNTIL_CHOICES = ("ok", "stable")

#: Seconds from the start of one ``--watch`` round to the next, unless ``--every`` says otherwise.
DEFAULT_EVERY = 2.0

#: Identical rounds in a row that end ``--until stable``, unless ``--stable-rounds`` says otherwise.
DEFAULT_STABLE_ROUNDS = 3

#: Seconds one DNS query to one resolver may take (``timeouts.dns``), before fitting.
DNS_TIMEOUT = 2.0

#: Seconds a whole cycle may take (``timeouts.deadline``) when neither it nor the interval says less.
DEADLINE = 25.0

#: Address family of the answers asked for (``ip_family``).
IP_FAMILY: Final = "ipv4"
