"""A loopback stand-in for an ALB that answers requests itself, as it does on the wire.

Each answer is the HTTP/1.1 response an Application Load Balancer sends when it does not
forward the request: its own error pages (one template, ``<center><h1>503 Service
Temporarily Unavailable</h1></center>``), the 302 of an authenticate action (to the identity
provider, with ``AWSELBAuthNonce``), an AWS WAF block (its 403 page) or CAPTCHA
(``x-amzn-waf-action``), a listener rule's fixed response, all with ``Server: awselb/2.0``
and no backend header. :func:`forwarded` is a target's response as the ALB passes it on
(the target's own headers, ``X-Backend``, no awselb Server). :func:`answering` serves them
in turn, one per connection, on a lab TLS node (``scene(handler=answering(...))``).

Sources: the ALB user guide ("Troubleshoot your Application Load Balancers", "Authenticate
users using an Application Load Balancer"), the AWS WAF developer guide ("CAPTCHA and
Challenge action behavior"), and ALB responses as published in bug reports.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable, Sequence
from email.utils import formatdate
from typing import Any

from probe.lab.servers import http2_handler

#: The reason phrases the ALB sends with its own pages.
PHRASES = {
    302: "Found",
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    502: "Bad Gateway",
    503: "Service Temporarily Unavailable",
    504: "Gateway Time-out",
}

IDP = "idp.corp.example"
COGNITO = "corp-login.auth.eu-west-1.amazoncognito.com"
#: The ``state`` an authenticate action puts in its redirect: long, opaque (about 600 characters).
STATE = "eyJ" + "QWxhZGRpbjpvcGVuIHNlc2FtZQ" * 23


def page(status: int) -> bytes:
    """The ALB's own page for ``status`` (162 bytes for its 503)."""
    title = f"{status} {PHRASES[status]}"
    return (
        f"<html>\r\n<head><title>{title}</title></head>\r\n<body>\r\n"
        f"<center><h1>{title}</h1></center>\r\n</body>\r\n</html>\r\n"
    ).encode()


def response(
    status: int, headers: Sequence[tuple[str, str]], body: bytes, phrase: str | None = None
) -> bytes:
    """An HTTP/1.1 response as the ALB writes it: Server, Date, then ``headers``, Content-Length, the body."""
    lines = [
        f"HTTP/1.1 {status} {phrase or PHRASES.get(status, 'OK')}",
        "Server: awselb/2.0",
        f"Date: {formatdate(usegmt=True)}",
        *(f"{name}: {value}" for name, value in headers),
        f"Content-Length: {len(body)}",
        "Connection: keep-alive",
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def no_healthy_target() -> bytes:
    """The target group has no registered targets: the ALB's own 503."""
    return response(503, [("Content-Type", "text/html")], page(503))


def own_error(status: int) -> bytes:
    """The ALB's own 502 or 504: a target failed, or did not answer in time."""
    return response(status, [("Content-Type", "text/html")], page(status))


def authenticate(hostname: str, idp: str = IDP) -> bytes:
    """An ``authenticate-oidc`` action on a client without a session (``-cognito`` for Cognito)."""
    callback = f"https%3A%2F%2F{hostname}%2Foauth2%2Fidpresponse"
    path = "/oauth2/authorize" if idp.endswith("amazoncognito.com") else "/oauth2/v1/authorize"
    location = (
        f"https://{idp}{path}?client_id=0oa4corpprobe7x&redirect_uri={callback}"
        f"&response_type=code&scope=openid&state={STATE}"
    )
    headers = [
        ("Content-Type", "text/html"),
        ("Location", location),
        (
            "Set-Cookie",
            "AWSELBAuthNonce=q8kYwHzN3mVtR2; Expires=Thu, 01 Jan 2099 00:15:00 GMT; Path=/; Secure; HttpOnly",
        ),
        ("Cache-Control", "no-cache"),
    ]
    return response(302, headers, page(302))


def authenticate_location(hostname: str, idp: str = IDP) -> str:
    """The Location of :func:`authenticate`."""
    head = authenticate(hostname, idp).split(b"\r\n\r\n", 1)[0].decode()
    return next(line.split(": ", 1)[1] for line in head.split("\r\n") if line.startswith("Location: "))


def waf_block() -> bytes:
    """An AWS WAF web ACL blocked the request: the ALB's own 403."""
    return response(403, [("Content-Type", "text/html")], page(403))


def waf_captcha() -> bytes:
    """An AWS WAF CAPTCHA action: 405 with ``x-amzn-waf-action: captcha`` and its interstitial page."""
    body = (
        b'<!DOCTYPE html><html lang="en"><head><title>Human Verification</title></head><body></body></html>'
    )
    headers = [("Content-Type", "text/html; charset=UTF-8"), ("x-amzn-waf-action", "captcha")]
    return response(405, headers, body, "Method Not Allowed")


def fixed(status: int, body: bytes, content_type: str = "text/plain; charset=utf-8") -> bytes:
    """A listener rule's fixed-response action: its status, content type and body."""
    return response(
        status, [("Content-Type", content_type)], body, PHRASES.get(status, "Service Unavailable")
    )


def forwarded(backend: str) -> bytes:
    """A target's 200 as the ALB passes it on: the target's headers, no awselb Server."""
    body = f"served by {backend}\n".encode()
    return (
        f"HTTP/1.1 200 OK\r\nServer: nginx\r\nDate: {formatdate(usegmt=True)}\r\n"
        f"Content-Type: text/plain\r\nX-Backend: {backend}\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode() + body


def answering(*answers: bytes) -> Callable[..., Any]:
    """A node handler: per connection, read the request head and write the next answer (in turn)."""
    turn = itertools.cycle(answers)

    async def handle(reader: asyncio.StreamReader, writer: Any) -> None:
        await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
        writer.write(next(turn))
        await writer.drain()

    return handle


#: Fields HTTP/2 forbids (RFC 9113 §8.2.2): the ALB drops them when it speaks HTTP/2.
_CONNECTION_FIELDS = frozenset({"connection", "keep-alive", "transfer-encoding", "upgrade"})


def as_http2(answer: bytes) -> tuple[list[tuple[str, str]], bytes]:
    """An answer of this module as HTTP/2 sends it: ``:status``, lower-case names, no connection fields."""
    head, body = answer.split(b"\r\n\r\n", 1)
    status_line, *lines = head.decode().split("\r\n")
    fields = [tuple(line.split(": ", 1)) for line in lines]
    headers = [(":status", status_line.split(" ")[1])]
    headers += [(name.lower(), value) for name, value in fields if name.lower() not in _CONNECTION_FIELDS]
    return headers, body


def answering_h2(*answers: bytes) -> Callable[..., Any]:
    """A node handler speaking HTTP/2: each stream gets the next answer, in turn (:func:`as_http2`).

    Use it on a node whose ``alpn`` is ``("h2",)``, as an ALB with HTTP/2 listeners answers.
    """
    turn = itertools.cycle([as_http2(answer) for answer in answers])
    return http2_handler(lambda: next(turn))
