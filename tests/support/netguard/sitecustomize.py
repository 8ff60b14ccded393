"""Loaded by every Python subprocess of the tests (``PYTHONPATH``): the loopback-only guard."""

import loopback_guard

loopback_guard.install()
