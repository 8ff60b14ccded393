"""Answers a load balancer gives itself, told from a backend's answer: pure, no I/O.

A load balancer answers some requests without forwarding them: an ALB's own 503 when its
target group has no registered targets, the 302 of an ``authenticate-oidc`` or
``authenticate-cognito`` action, an AWS WAF block, a listener rule's fixed response;
HAProxy's own 503 when no server is available, its 403 for ``http-request deny``. Such a
response names no backend, and what it says about itself gives it away:

* ALB: ``Server: awselb/2.0`` (``awselb/…``; a target's response keeps the target's own
  Server, or none). Its pages have one template (``<center><h1>503 Service Temporarily
  Unavailable</h1></center>``; older ALBs add ``<hr><center>awselb/2.0</center>``, which
  is taken as evidence on its own). An authenticate action sets ``AWSELBAuthNonce`` (and
  clears the ``AWSELBAuthSessionCookie-N`` shards) and redirects to the identity
  provider with ``redirect_uri=…/oauth2/idpresponse``; an AWS WAF CAPTCHA or Challenge
  action sends ``x-amzn-waf-action``; a WAF block is the ALB's only own 403.
* HAProxy: its built-in error pages (``<html><body><h1>503 Service Unavailable</h1>`` and
  one fixed sentence per status, "No server is available to handle this request."); it
  sends no Server header.
* API Gateway (a private REST API in front of a service): ``x-amzn-ErrorType`` on its
  own errors. ``x-amzn-RequestId`` is not evidence: it is on every response, the
  backend's too.

Not recognised: the Classic Load Balancer's own errors, which carry nothing but their
reason phrase ("503 Service Unavailable: Back-end server is at capacity", an empty body,
no Server header), and custom error pages.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from urllib.parse import urlsplit

import httpx

from probe._text import shorten
from probe.model.reasons import Reason
from probe.model.results import AUTHENTICATION_COOKIE, Failure, IPAddress, LoadBalancerAnswer

#: Only bodies up to this size (bytes) are compared with the balancers' own pages, which are
#: a few hundred bytes at most.
PAGE_BYTES = 2048

_PRINTABLE = re.compile(r"[^\x20-\x7e]+")
_BETWEEN_TAGS = re.compile(rb">\s+<")
# The ALB's page (nginx's template): title and heading "503 Service Temporarily Unavailable",
# an optional footer naming the server. Bounded input (PAGE_BYTES), no nested repetition.
_ALB_PAGE = re.compile(
    rb'<html><head><title>(\d{3}) ([^<]{1,64})</title></head><body(?: bgcolor="white")?>'
    rb"<center><h1>(\d{3}) ([^<]{1,64})</h1></center>(?:<hr><center>([^<]{1,64})</center>)?</body></html>"
)
_HAPROXY_PAGE = re.compile(rb"<html><body><h1>(\d{3}) ([^<]{1,64})</h1>([^<]{1,160})</body></html>")

#: HAProxy's built-in pages (src/http.c, ``http_err_msgs``): the sentence under the heading.
HAPROXY_SENTENCES: dict[int, str] = {
    200: "Service ready.",
    400: "Your browser sent an invalid request.",
    401: "You need a valid user and password to access this content.",
    403: "Request forbidden by administrative rules.",
    404: "The resource could not be found.",
    405: "A request was made of a resource using a request method not supported by that resource",
    407: "You need a valid user and password to access this content.",
    408: "Your browser didn't send a complete request in time.",
    410: "The resource is no longer available and will not be available again.",
    413: "The request entity exceeds the maximum allowed.",
    421: "Request sent to a non-authoritative server.",
    422: "The server cannot process the contained instructions.",
    425: "Your browser sent early data.",
    429: "You have sent too many requests in a given amount of time.",
    500: "An internal server error occurred.",
    501: "The server does not support the functionality required to fulfill the request.",
    502: "The server returned an invalid or incomplete response.",
    503: "No server is available to handle this request.",
    504: "The server didn't respond in time.",
}

_HAPROXY_KINDS = {
    200: ("fixed_response", "its monitor-uri answer (or a rule that returns it)"),
    401: ("authenticate", "an http-request auth rule asks for credentials"),
    407: ("authenticate", "an http-request auth rule asks for credentials"),
    403: ("blocked", "an http-request deny rule refused the request"),
    429: ("blocked", "a rate limit (http-request deny deny_status 429) refused the request"),
    503: ("no_healthy_target", "no server was available for the request"),
}

_WAF_ACTIONS = {"captcha": "CAPTCHA", "challenge": "Challenge"}


def load_balancer_answer(
    status: int,
    headers: httpx.Headers | Mapping[str, str],
    body: bytes,
    *,
    cookies: tuple[str, ...] = (),
    location: str | None = None,
) -> LoadBalancerAnswer | None:
    """The load balancer's own answer in a response, ``None`` when nothing says so.

    Call it only for a response in which no backend was identified: a response that names
    its backend came from that backend.

    Args:
        status: the status code.
        headers: the response headers.
        body: the body as decoded (only its first :data:`PAGE_BYTES` bytes matter, and
            only when it is no longer than that).
        cookies: the names of the cookies the response sets (never their values).
        location: a redirect's Location, absolute.

    Returns:
        The answer: its kind, whose it is, what happened and the evidence, in words.
    """
    server = _first(headers, "server")
    page = _alb_page(status, body)
    if server is not None and server.lower().startswith("awselb/"):
        return _alb(status, headers, page is not None, f"Server: {_shown(server)}", cookies, location)
    if page is not None and page.lower().startswith("awselb/"):
        return _alb(status, headers, True, f"its page's footer names {_shown(page)}", cookies, location)
    sentence = _haproxy_page(status, body)
    if sentence is not None:
        kind, what = _HAPROXY_KINDS.get(status, ("error", f"its own {status} page"))
        return LoadBalancerAnswer(kind, "HAProxy", what, f"HAProxy's own {status} page: '{sentence}'")
    error_type = _first(headers, "x-amzn-errortype")
    if error_type is not None:
        return _api_gateway(status, _shown(error_type))
    return None


def not_reached(status: int, answer: LoadBalancerAnswer, address: IPAddress | None) -> Failure:
    """``backend_not_reached``: the load balancer answered itself with a status the target accepts."""
    detail = f"the load balancer answered itself with status {status}, not a backend: {answer.said}"
    return Failure(Reason.BACKEND_NOT_REACHED, detail, address)


def _alb(
    status: int,
    headers: httpx.Headers | Mapping[str, str],
    own_page: bool,
    evidence: str,
    cookies: tuple[str, ...],
    location: str | None,
) -> LoadBalancerAnswer:
    """An ALB's own answer, by what else it says: an authenticate action, WAF, its own page, a rule."""
    waf = _first(headers, "x-amzn-waf-action")
    if waf is not None:
        action = _WAF_ACTIONS.get(waf.strip().lower(), _shown(waf))
        return LoadBalancerAnswer(
            "blocked",
            "ALB",
            f"an AWS WAF {action} action stopped the request (a web ACL rule)",
            f"{evidence}; x-amzn-waf-action: {_shown(waf)}",
        )
    auth = [name for name in cookies if name.startswith(AUTHENTICATION_COOKIE)]
    login = location is not None and "oauth2/idpresponse" in location.replace("%2F", "/").replace("%2f", "/")
    if auth or login or (own_page and status in (401, 561)):
        sets = f"; sets {', '.join(auth)}" if auth else ""
        return LoadBalancerAnswer("authenticate", "ALB", _authentication(status, location), evidence + sets)
    if 300 <= status <= 399:
        return LoadBalancerAnswer("redirect", "ALB", "a listener rule's redirect action", evidence)
    if own_page:
        return _alb_own_page(status, evidence)
    waf = " (or an AWS WAF block with a custom response)" if status >= 400 else ""
    return LoadBalancerAnswer(
        "fixed_response", "ALB", f"a listener rule's fixed-response action{waf}", evidence
    )


def _alb_own_page(status: int, evidence: str) -> LoadBalancerAnswer:
    """The ALB's own page for ``status``: a WAF block (403), no target (503), another error."""
    evidence += "; the ALB's own error page"
    if status == 403:
        return LoadBalancerAnswer(
            "blocked", "ALB", "an AWS WAF web ACL blocked the request (the ALB's only own 403)", evidence
        )
    if status == 503:
        return LoadBalancerAnswer(
            "no_healthy_target",
            "ALB",
            "no target to forward to: the target group has no registered targets",
            evidence,
        )
    return LoadBalancerAnswer("error", "ALB", f"the ALB's own {status} answer", evidence)


def _authentication(status: int, location: str | None) -> str:
    """What an authenticate action did, in words (a redirect to the identity provider, a 401, a 561)."""
    host = _host(location)
    cognito = host is not None and host.endswith(".amazoncognito.com")
    action = "authenticate-cognito" if cognito else "authenticate-oidc"
    if status == 401:
        return "an authenticate action refuses a client without a session (OnUnauthenticatedRequest: deny)"
    if status == 561:
        return "the identity provider answered the authenticate action with an error"
    where = f" at {host}" if host else ""
    return f"an {action} action sends a client without a session cookie to the identity provider{where}"


def _api_gateway(status: int, error_type: str) -> LoadBalancerAnswer:
    """API Gateway's own error (``x-amzn-ErrorType``): a login, a block or another error by status."""
    kind = {401: "authenticate", 403: "blocked", 429: "blocked"}.get(status, "error")
    return LoadBalancerAnswer(
        kind, "API Gateway", f"API Gateway's own {error_type} answer", f"x-amzn-ErrorType: {error_type}"
    )


def _alb_page(status: int, body: bytes) -> str | None:
    """The footer of an ALB-style page for ``status`` (``""`` without one); ``None`` when it is not one."""
    if len(body) > PAGE_BYTES:
        return None
    match = _ALB_PAGE.fullmatch(_BETWEEN_TAGS.sub(b"><", body.strip()))
    if match is None or match[1] != match[3] or match[2] != match[4] or match[1] != str(status).encode():
        return None
    return (match[5] or b"").decode("ascii", "replace")


def _haproxy_page(status: int, body: bytes) -> str | None:
    """The sentence of HAProxy's own page for ``status``, ``None`` when the body is not that page."""
    if len(body) > PAGE_BYTES or status not in HAPROXY_SENTENCES:
        return None
    match = _HAPROXY_PAGE.fullmatch(body.strip())
    if match is None or match[1] != str(status).encode():
        return None
    sentence = match[3].decode("ascii", "replace").strip().lstrip(".")  # HAProxy's 501 starts with "."
    return sentence if sentence == HAPROXY_SENTENCES[status] else None


def _first(headers: httpx.Headers | Mapping[str, str], name: str) -> str | None:
    """The first value of a header field, ``None`` when absent (any case of the name)."""
    if isinstance(headers, httpx.Headers):
        value: str | None = headers.get(name)
        return value
    return next((value for key, value in headers.items() if key.lower() == name), None)


def _host(url: str | None) -> str | None:
    """The host of a URL, ``None`` when there is none or it does not parse."""
    if url is None:
        return None
    try:
        host = urlsplit(url).hostname
    except ValueError:
        return None
    return _shown(host) if host else None


def _shown(value: str) -> str:
    """A header value for a sentence: printable, at most 80 characters (a cut one says so)."""
    return shorten(_PRINTABLE.sub("_", value.strip()), 80)
