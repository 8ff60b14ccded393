"""A URL the config accepts is one the HTTP layer sends: no ``internal_error`` each cycle.

The config refuses what httpx cannot send as written (control characters, spaces, more than
65,000 characters; tests/unit/config/test_config.py and tests/integration/cli/test_early_refusals.py).
What it accepts reaches a real server: characters outside ASCII percent-encoded as UTF-8 (curl
encodes those of the path the same, in lower-case hex, and sends those of the query raw),
the rest as written.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest

from probe.model.reasons import Reason, Status
from tests.support.helpers import reasons, run


def recording(lines: list[str]) -> Callable[..., Any]:
    """A handler: note the request line, answer 200 from backend web-1."""

    async def handle(reader: asyncio.StreamReader, writer: Any) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        lines.append(head.split(b"\r\n", 1)[0].decode("ascii", "replace"))
        writer.write(
            b"HTTP/1.1 200 OK\r\nX-Backend: web-1\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok"
        )
        await writer.drain()

    return handle


@pytest.mark.parametrize(
    ("path", "sent"),
    [
        ("/café?q=ü", "/caf%C3%A9?q=%C3%BC"),
        ("/a|b^c\\d", "/a|b^c\\d"),
        ("/[x]/%41?a=b&c", "/[x]/%41?a=b&c"),
        ("/" + "a" * 60_000, "/" + "a" * 60_000),
    ],
    ids=["non-ascii", "unsafe-ascii", "brackets-and-escapes", "60000-characters"],
)
def test_an_accepted_url_is_sent_and_judged(scene: Any, path: str, sent: str) -> None:
    lines: list[str] = []
    s = scene(handler=recording(lines), backends=())
    url = s.target["url"].rstrip("/") + path

    result = run({**s.target, "url": url, "requests_per_address": 1})

    assert Reason.INTERNAL_ERROR.value not in reasons(result)
    assert result.status is Status.OK, reasons(result)
    assert lines == [f"GET {sent} HTTP/1.1"]
