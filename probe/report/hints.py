"""Hints: the likely causes of each finding, in the words of the platform's console.

One table, next to the reason vocabulary (:mod:`probe.model.reasons`): every reason code has a
hint for every :class:`~probe.model.reasons.Platform`, or is listed in :data:`NO_HINT`. Hints
are advice, not findings: they appear in the text report (``hint: …`` under a finding)
and as ``hint`` in the JSON document, never in metric labels or logs, and they never
change a verdict.

Pure: the hint of a finding depends only on its reason code, its address (public or
not, for ``dns_unexpected_address``) and, for ``http_status`` and ``backend_not_reached``,
the status codes of the responses it summarises and who gave them (a backend, or the load
balancer itself and how: an authenticate action, a WAF block, a fixed response, no
healthy target), which the caller takes from the attempts (never from the finding's text).

Sources for the AWS wording: Elastic Load Balancing user guides, "Troubleshoot your
Application Load Balancers" (HTTP 460, 463, 464, 502, 503, 504) and "Troubleshoot a
Classic Load Balancer: HTTP errors"; Route 53 "Working with private hosted zones".
"""

from __future__ import annotations

from collections.abc import Iterable

from probe.model.reasons import Platform, Reason
from probe.model.results import NAMED_BACKEND, Failure, HttpAttempt, TargetResult

#: A response as a hint needs it: its status code, and who answered
#: (``HttpAttempt.answered_by``: the kind of the load balancer's own answer,
#: ``NAMED_BACKEND`` for a response that names its backend, ``None`` when unknown); a bare
#: code is ``(code, None)``.
Answer = int | tuple[int, str | None]

#: The reasons whose hint depends on the responses behind them (see :data:`Answer`).
BY_RESPONSE = frozenset({Reason.HTTP_STATUS, Reason.BACKEND_NOT_REACHED})

_G = Platform.GENERIC
_A = Platform.AWS

#: Reason codes that deliberately carry no hint: their summary and detail say all there is.
NO_HINT: frozenset[Reason] = frozenset(
    {
        Reason.INTERNAL_ERROR,  # a bug in probe: the traceback is in the log
        Reason.CERT_UNPARSED,  # a fact about probe's parser, not about the service
    }
)

#: The hint per reason code and platform.
HINTS: dict[Reason, dict[Platform, str]] = {
    Reason.DNS_NXDOMAIN: {
        _G: "no such record in the zone, a typo in the name, or this host asks a resolver that "
        "does not see the private zone",
        _A: "no record for this name in the Route 53 hosted zone, or the private hosted zone is "
        "not associated with this host's VPC",
    },
    Reason.DNS_SERVFAIL: {
        _G: "the resolver cannot reach the zone's name servers, or DNSSEC validation failed",
        _A: "the Route 53 Resolver cannot resolve it: a Resolver forwarding rule points at an "
        "unreachable DNS server, or DNSSEC validation failed",
    },
    Reason.DNS_REFUSED: {
        _G: "the resolver does not serve this host (recursion not allowed from this address)",
        _A: "the resolver does not serve this host; inside a VPC ask the Route 53 Resolver "
        "(the VPC CIDR's base address plus two, or 169.254.169.253)",
    },
    Reason.DNS_TIMEOUT: {
        _G: "the resolver is unreachable: a firewall drops port 53 (UDP and TCP), or the "
        "resolver address is wrong",
        _A: "the resolver is unreachable: a security group or network ACL drops port 53 to the "
        "Route 53 Resolver endpoint, or the resolver address is wrong",
    },
    Reason.DNS_NO_ANSWER: {
        _G: "the name exists but has no address record of this family (try --ip-family), or "
        "another zone than the intended one answered",
        _A: "no A (or AAAA) record for this name in the hosted zone, or the private hosted zone "
        "is not associated with this host's VPC and another zone answers",
    },
    Reason.DNS_ERROR: {
        _G: "the resolver is not reachable or answered an unusual error; check --resolver",
        _A: "the resolver is not reachable or answered an unusual error; inside a VPC the Route "
        "53 Resolver is at the VPC CIDR's base address plus two",
    },
    Reason.DNS_MALFORMED: {
        _G: "a device between this host and the resolver rewrites DNS, or the resolver address "
        "is not a DNS server",
        _A: "a device between this host and the resolver rewrites DNS, or the resolver address "
        "is not a DNS server (nor a Route 53 Resolver endpoint)",
    },
    Reason.DNS_CNAME_LOOP: {
        _G: "CNAME records point at each other",
        _A: "CNAME records point at each other; for a load balancer use a Route 53 alias A "
        "record instead of a CNAME",
    },
    Reason.DNS_UNEXPECTED_ADDRESS: {
        _G: "the record points at a host in another network, or expect_networks lacks this network",
        _A: "the record points at a load balancer in another VPC, or expect_networks lacks this VPC's CIDR",
    },
    Reason.DNS_ALIAS_MISMATCH: {
        _G: "the name points at another server than expect_same_addresses_as: an old record, or "
        "the wrong target",
        _A: "the alias record points at another load balancer; check the Route 53 record's "
        "alias target (load balancer node addresses change, so alias rather than copy them)",
    },
    Reason.DNS_RESOLVER_FAILOVER: {
        _G: "the first resolver is unreachable or failing; the next one answered",
        _A: "the first resolver is unreachable or failing (a Route 53 Resolver endpoint's "
        "security group, or a stopped DNS server); the next one answered",
    },
    Reason.DNS_TOO_MANY_ADDRESSES: {
        _G: "the name resolves to more servers than a load balancer has: check the record (a wildcard "
        "or a round-robin set of every host?); only the 64 lowest addresses were probed",
        _A: "a load balancer's name resolves to at most 8 addresses per family: check the record "
        "(a weighted or multivalue set grown too large?); only the 64 lowest addresses were probed",
    },
    Reason.TCP_REFUSED: {
        _G: "nothing listens on this port at this address: no listener, or the service is down",
        _A: "no listener on this port: add the listener (e.g. HTTPS:443) to the load balancer, "
        "or the address is not one of its nodes",
    },
    Reason.TCP_TIMEOUT: {
        _G: "a firewall drops the connection, or there is no route to the address",
        _A: "the load balancer's security group does not allow this port from this host (its "
        "address or security group), or the route, network ACL, VPC peering or transit "
        "gateway between the VPCs is missing",
    },
    Reason.TCP_ERROR: {
        _G: "no route to the host or network, or the connection was reset",
        _A: "no route to the load balancer's subnets: route tables, VPC peering or the transit "
        "gateway attachment",
    },
    Reason.TLS_HANDSHAKE_TIMEOUT: {
        _G: "the port accepts TCP but does not speak TLS (a plain HTTP listener), or the server "
        "is overloaded",
        _A: "the listener on this port may be HTTP, not HTTPS, or the load balancer is overloaded",
    },
    Reason.TLS_HANDSHAKE_FAILED: {
        _G: "the port speaks plain HTTP, or the server accepts none of the offered versions and "
        "ciphers, or it asks for a client certificate",
        _A: "the listener is HTTP, not HTTPS; or its security policy (ELBSecurityPolicy-…) "
        "shares no version or cipher with this host; or mutual TLS is on",
    },
    Reason.TLS_VERSION_BELOW_MINIMUM: {
        _G: "the server offers only old TLS versions; raise its minimum version",
        _A: "the listener's security policy allows only versions below min_tls_version; choose "
        "a newer ELBSecurityPolicy-TLS13-… policy",
    },
    Reason.CERT_EXPIRED: {
        _G: "the certificate was not renewed, or the new one was not deployed; or this host's clock is wrong",
        _A: "an imported certificate expired (ACM renews only the certificates it issued), or "
        "the listener still uses the old one; or this host's clock is wrong",
    },
    Reason.CERT_NOT_YET_VALID: {
        _G: "this host's clock is behind, or the certificate starts in the future",
        _A: "this host's clock is behind (chrony and the Amazon Time Sync Service), or an "
        "imported certificate starts in the future",
    },
    Reason.CERT_HOSTNAME_MISMATCH: {
        _G: "the server sends a certificate for other names: add this name to the certificate, "
        "or configure a certificate for it (SNI)",
        _A: "the listener's default certificate does not cover the name; add the certificate "
        "for this name to the listener's certificate list (SNI), or make it the default",
    },
    Reason.CERT_SELF_SIGNED: {
        _G: "a self-signed certificate: install one from a CA, or trust this one with --ca-file",
        _A: "an imported self-signed certificate on the listener: request an ACM certificate, or "
        "trust this one with --ca-file",
    },
    Reason.CERT_UNTRUSTED: {
        _G: "a certificate without its chain, or from a private CA this host does not trust "
        "(give its root with --ca-file)",
        _A: "an imported certificate without its chain, or a private CA that this host does not "
        "trust (give its root with --ca-file)",
    },
    Reason.CERT_CHAIN_INCOMPLETE: {
        _G: "the server does not send the intermediate certificate(s): configure the full chain",
        _A: "an imported certificate without its chain: re-import it in ACM with the certificate "
        "chain; or a private CA that this host does not trust",
    },
    Reason.CERT_EXPIRING_SOON: {
        _G: "renew and deploy the certificate before it expires",
        _A: "ACM renews its own certificates only while the DNS validation record exists and the "
        "certificate is in use; an imported one must be re-imported",
    },
    Reason.CERT_DIFFERS_BETWEEN_ADDRESSES: {
        _G: "a certificate change is half deployed, or the addresses belong to different servers",
        _A: "a listener certificate change still propagating to every node, or the name's "
        "addresses belong to different load balancers",
    },
    Reason.OCSP_REVOKED: {
        _G: "the CA revoked the certificate: replace it",
        _A: "the CA revoked the certificate: request or import a new one for the listener",
    },
    Reason.OCSP_STALE: {
        _G: "the server staples an old OCSP response: it cannot reach the CA's OCSP responder",
        _A: "the server staples an old OCSP response: it cannot reach the CA's OCSP responder "
        "(outbound access from its subnets)",
    },
    Reason.OCSP_INVALID: {
        _G: "the server staples a broken OCSP response, or one for another certificate",
        _A: "the server staples a broken OCSP response, or one for another certificate (an old "
        "one kept after the certificate changed)",
    },
    Reason.HTTP_TIMEOUT: {
        _G: "the backend is slow or hangs; compare its response time with timeouts.http",
        _A: "the target is slow or hangs (the load balancer waits up to its idle timeout, then answers 504)",
    },
    Reason.HTTP_STATUS: {
        _G: "the server answered this status; if it is expected, add it to valid_status_codes",
        _A: "this status likely comes from the application on the target, not from the load "
        "balancer (an ALB's own codes are 460, 463, 464, 502, 503 and 504), or from a listener "
        "rule's fixed-response action",
    },
    Reason.HTTP_BODY_MISMATCH: {
        _G: "another application or an error page answered; check the URL's path and body_regex",
        _A: "a listener rule with a fixed-response action, or another target group, answered; "
        "check the listener rules and body_regex",
    },
    Reason.HTTP_PROTOCOL_ERROR: {
        _G: "the server or a device in the path broke the response (closed early, invalid HTTP)",
        _A: "the target closed the connection mid-response or sent invalid HTTP",
    },
    Reason.HTTP_STREAM_ERROR: {
        _G: "the server or a proxy in front of it gave up on the response: a backend that died or "
        "timed out mid-response (INTERNAL_ERROR, CANCEL), or a server that treats this client as "
        "abusive (ENHANCE_YOUR_CALM); check its logs at that time",
        _A: "the load balancer reset the stream because the target closed or reset its own "
        "connection mid-response (crash, deploy, the target's keep-alive shorter than the load "
        "balancer's idle timeout), or the target itself speaks HTTP/2 and reset it",
    },
    Reason.GRPC_STATUS: {
        _G: "the gRPC service failed the call: UNIMPLEMENTED means no such method (a GET reaches none), "
        "UNAVAILABLE a backend down or a proxy failing, UNAUTHENTICATED missing credentials "
        "(--header); an answer that is not gRPC came from a web server or proxy in front",
        _A: "the target failed the call: UNIMPLEMENTED means no such method, UNAVAILABLE a target "
        "down or unreachable from the load balancer; an answer that is not gRPC comes from a "
        "listener or target group that does not use the gRPC protocol version",
    },
    Reason.GRPC_NOT_SERVING: {
        _G: "the backend's health service says it does not serve: it is starting, draining or "
        "failing a dependency; check that backend's own logs and health",
        _A: "the target's health service says it does not serve: it is starting, draining or "
        "failing a dependency; the target group's health check may not use the same service",
    },
    Reason.GRPC_SERVICE_UNKNOWN: {
        _G: "the health service does not know this service name: check grpc_health.service "
        "against the names the server registers (empty for the server as a whole)",
        _A: "the target's health service does not know this service name: check grpc_health.service "
        "against the names the application registers, and the target group's health check path",
    },
    Reason.HTTP_STREAM_REFUSED: {
        _G: "the server refuses new requests: it is draining (a deploy, a reload) or at its limit "
        "of concurrent streams; if it lasts, it is overloaded or stuck shutting down",
        _A: "the load balancer or the target refuses new requests: a target draining during a "
        "deploy (deregistration delay) or a target at its concurrency limit; check the target "
        "group's health and the targets' logs",
    },
    Reason.HTTP_BODY_TOO_LARGE: {
        _G: "the URL returns more than expected; check its path, or raise body_size_limit",
        _A: "the URL returns more than expected; check its path and the listener rules, or raise "
        "body_size_limit",
    },
    Reason.HTTP_CLOCK_SKEW: {
        _G: "this host's clock or the server's is wrong; check NTP on both",
        _A: "this host's clock or the target's is wrong; use chrony with the Amazon Time Sync "
        "Service (169.254.169.123)",
    },
    Reason.BACKEND_UNIDENTIFIED: {
        _G: "the backend does not send what the backend rule looks for, or an error page of the "
        "load balancer answered",
        _A: "the target does not send the header or body the backend rule looks for, or the load "
        "balancer itself (an error page or a fixed-response rule) answered",
    },
    Reason.BACKEND_MISSING: {
        _G: "the backend is down or out of the pool, or the balancer keeps this client on other "
        "backends (stickiness)",
        _A: "a target is unhealthy or deregistered (the target group's Targets tab), or cross-zone "
        "load balancing is off and each zone has one target, or stickiness is on",
    },
    Reason.BACKEND_UNEXPECTED: {
        _G: "a new backend was added to the pool, or expect_backends is out of date",
        _A: "a target registered in the target group that expect_backends does not list",
    },
    Reason.BACKEND_IMBALANCE: {
        _G: "unequal weights, a backend that is slow or just started, or stickiness",
        _A: "cross-zone load balancing is off with unequal targets per zone, slow start mode, "
        "stickiness, or the least outstanding requests algorithm",
    },
    Reason.BACKEND_UNDECIDED: {
        _G: "too few responses to tell chance from a missing backend: raise requests_per_address "
        "(--requests), or let the daemon or --watch count across cycles",
        _A: "with weighted_random or least outstanding requests a healthy target may go unseen in "
        "a few requests: raise requests_per_address (--requests), or let the daemon or --watch count "
        "across cycles; if it stays unseen, check the target group's Targets tab",
    },
    Reason.CYCLE_FD_LIMIT: {
        _G: "this host, not the service: probe has as many files and sockets open as it may; raise "
        "LimitNOFILE= in its systemd unit (4096 in the shipped one) or ulimit -n, or check fewer "
        "targets at once",
        _A: "this host, not the service: probe has as many files and sockets open as it may; raise "
        "LimitNOFILE= in its systemd unit (4096 in the shipped one) or ulimit -n, or check fewer "
        "targets at once",
    },
    Reason.CYCLE_DEADLINE_EXCEEDED: {
        _G: "the stages' timeouts add up to more than timeouts.deadline, or many addresses are slow",
        _A: "the stages' timeouts add up to more than timeouts.deadline, or many addresses are "
        "slow (security groups that drop rather than refuse make every connect wait)",
    },
    Reason.TLS_WEAK_CIPHER: {
        _G: "the server prefers an old cipher suite; update its cipher list",
        _A: "the listener's security policy allows old ciphers; choose a newer "
        "ELBSecurityPolicy-TLS13-… policy",
    },
    Reason.TLS_VERSION_DEPRECATED: {
        _G: "the server still speaks TLS 1.0 or 1.1; raise its minimum version",
        _A: "the listener's security policy allows TLS 1.0 or 1.1; choose an "
        "ELBSecurityPolicy-TLS13-1-2-… policy",
    },
    Reason.HTTP_REDIRECT_WRONG: {
        _G: "the redirect rule builds the wrong URL: it should keep the host, path and query and "
        "change only the scheme to https (HAProxy: redirect scheme https; nginx: return 301 "
        "https://$host$request_uri)",
        _A: "the HTTP listener's redirect action changes more than the protocol: set protocol "
        "HTTPS, port 443, and keep #{host}, #{path} and #{query}, with status HTTP_301 or HTTP_302",
    },
    Reason.HTTP_REDIRECT_MISSING: {
        _G: "the plain HTTP listener serves (or forwards) instead of redirecting: make its "
        "default action a redirect to https",
        _A: "the HTTP:80 listener's default action (or a rule before it) forwards to a target "
        "group or answers with a fixed response; change it to a redirect to HTTPS, port 443",
    },
    Reason.TLS_ALPN_MISMATCH: {
        _G: "the server speaks none of the offered HTTP versions; try --http-version 1.1 or 2 "
        "(with --grpc-health, a server without h2 serves no gRPC: check its port and protocol)",
        _A: "the listener's ALPN policy (HTTP1Only, HTTP2Only …) excludes what probe offers; "
        "try --http-version 1.1 or 2 (with --grpc-health, the listener must allow HTTP/2 and "
        "forward to a target group of protocol version gRPC)",
    },
    Reason.BACKEND_DOWN: {
        _G: "the backend host is stopped, or its service does not listen on the port the balancer "
        "uses; the balancer has taken it out of the pool",
        _A: "the EC2 instance is stopped or its service is down; the target group's Targets tab "
        "shows it unhealthy (its health check reason says why)",
    },
    Reason.BACKEND_NOT_IN_ROTATION: {
        _G: "the backend is not in the balancer's pool, its health check fails (path, port, "
        "expected status), or a firewall lets this host through but not the balancer",
        _A: "the instance is not registered in the target group (or in another one), its health "
        "check path or port fails, or its security group does not allow the load balancer's "
        "security group on the target port",
    },
    Reason.BACKEND_DIRECT_BLOCKED: {
        _G: "a firewall between this host and the backend drops or refuses the port; clients are "
        "not affected while the balancer reaches the backend",
        _A: "the instance's security group allows the load balancer's security group but not this "
        "host (its address or security group), or a network ACL or route between them is missing",
    },
    Reason.BACKEND_DIRECT_FAILED: {
        _G: "the backend answers this host differently than the balancer: see the direct check's "
        "finding (certificate, pin, status code)",
        _A: "the instance answers this host differently than the ALB (which does not verify target "
        "certificates): see the direct check's finding",
    },
    Reason.BACKEND_CERT_PIN_MISMATCH: {
        _G: "the backend's certificate was regenerated (a rebuilt host, a new image) or another "
        "host answers at that address; update fingerprint_sha256 once it is expected",
        _A: "the instance was replaced or its self-signed certificate regenerated (a new AMI or "
        "launch template), or another instance has that private address; update fingerprint_sha256",
    },
    Reason.BACKEND_CERT_EXPIRING_SOON: {
        _G: "renew the backend's own certificate; the balancer may not check it, but other "
        "clients and the next deployment will",
        _A: "renew the instance's certificate (the ALB does not verify it, but other clients "
        "and the next launch from the same image will fail on it)",
    },
    Reason.TLS_CLIENT_CERT_REQUIRED: {
        _G: "the listener requires mutual TLS: give probe a client certificate it trusts "
        "(tls_client, --cert/--key); with one given, the listener's request allows no "
        "signature algorithm of its key",
        _A: "the listener's mutual TLS is in verify mode: give probe a client certificate issued "
        "by a CA of its trust store (tls_client, --cert/--key); passthrough mode would not refuse",
    },
    Reason.TLS_CLIENT_CERT_REFUSED: {
        _G: "the listener does not accept this certificate: its CA is not in the listener's trust "
        "store, it expired or was revoked, cert_file lacks the intermediate, or it is not made "
        "for clients; the alert says which",
        _A: "the listener's trust store (its CA bundle in S3) lacks the certificate's CA, or a "
        "revocation list of the trust store lists it, or it expired (unless the listener ignores "
        "client certificate expiry); the alert says which",
    },
    Reason.TLS_CLIENT_CERT_EXPIRING_SOON: {
        _G: "renew probe's client certificate (tls_client) before it expires: a listener that "
        "verifies it refuses every connection from then on",
        _A: "renew probe's client certificate (tls_client) before it expires: an ALB in mutual "
        "TLS verify mode refuses it from then on, unless the listener ignores client "
        "certificate expiry",
    },
    Reason.BACKEND_NOT_REACHED: {
        _G: "the load balancer answers this URL itself (a rule with a fixed response or a redirect) "
        "before any backend: check its rules for this host and path, or check a path it forwards",
        _A: "a listener rule with a fixed-response or redirect action answers this host and path "
        "before the rule that forwards to the target group: check the listener rules' order and "
        "conditions",
    },
}

#: ``http_status`` and ``backend_not_reached`` for a response the load balancer gave itself,
#: by the kind of its answer (``LoadBalancerAnswer.kind``; ``error`` uses :data:`STATUS_HINTS`).
LOAD_BALANCER_HINTS: dict[str, dict[Platform, str]] = {
    "authenticate": {
        _G: "the load balancer asks for a login before any backend (an OIDC or basic-auth step); "
        "probe sends no cookies or credentials, so check a path without authentication, or add the "
        "status to valid_status_codes if this URL is meant to ask for one",
        _A: "a listener rule's authenticate-oidc or authenticate-cognito action answers a client "
        "without an AWSELBAuthSessionCookie (302 to the identity provider, 401 if it denies); the "
        "targets never see it: check a path without that action, or accept the status",
    },
    "blocked": {
        _G: "an access rule or web application firewall of the load balancer refused the request "
        "before any backend (HAProxy: http-request deny); check its rules against this host's "
        "address and probe's request (User-Agent probe/…, no cookies)",
        _A: "an AWS WAF web ACL associated with the load balancer blocked the request (or answered "
        "with a CAPTCHA or challenge); the targets never saw it: find the matching rule in the web "
        "ACL's sampled requests (this host's address, probe's User-Agent probe/…)",
    },
    "fixed_response": {
        _G: "a rule of the load balancer answers this URL itself (a fixed or maintenance response); "
        "check its rules for this host and path",
        _A: "a listener rule's fixed-response action answers this host and path (a maintenance "
        "rule, or one above the forward rule); check the listener rules' order and conditions",
    },
    "redirect": {
        _G: "the load balancer redirects this URL itself: compare Location with the URL; add the "
        "code to valid_status_codes if it is expected",
        _A: "a listener rule's redirect action answers this URL: compare Location with the URL; "
        "add the code to valid_status_codes if it is expected",
    },
    "no_healthy_target": {
        _G: "the load balancer has no backend to send to: every server is down or fails its "
        "health check, none is configured, or (without health checks) the one chosen refused "
        "the connection",
        _A: "the target group has no registered targets (with every target unhealthy an ALB "
        "still routes to them), or the rule forwards to an empty target group; see the target "
        "group's Targets tab",
    },
}

#: ``http_status`` for an own answer of kind ``error`` whose code has no :data:`STATUS_HINTS` entry.
OWN_ERROR_HINT: dict[Platform, str] = {
    _G: "the load balancer's own error page, not a backend's; its documentation says when it "
    "answers this code",
    _A: "the load balancer's own error, not the target's (Troubleshoot your Application Load "
    "Balancers lists when an ALB answers this code)",
}

#: ``dns_unexpected_address`` when the address is public (outside every special range).
PUBLIC_ADDRESS_HINT: dict[Platform, str] = {
    _G: "a public address: the record points at an internet-facing service, or a public zone "
    "answers instead of the private one",
    _A: "a public address: the record points at an internet-facing load balancer (scheme "
    "internet-facing, not internal), or the public hosted zone answers because the private "
    "one is not associated with this VPC",
}

#: ``http_status`` per status code: the load balancer's own answers.
STATUS_HINTS: dict[int, dict[Platform, str]] = {
    460: {
        _G: "460: a load balancer's log code for a client that closed the connection early",
        _A: "ALB 460: the client closed the connection before the idle timeout (shown in access "
        "logs; a client does not normally receive it); the Classic Load Balancer has no 460",
    },
    463: {
        _G: "463: a load balancer refused an X-Forwarded-For header with too many addresses",
        _A: "ALB 463: the X-Forwarded-For header holds more than 30 addresses (a chain of "
        "proxies); the Classic Load Balancer has no 463",
    },
    464: {
        _G: "464: the request's protocol does not match what the backend pool expects",
        _A: "ALB 464: the request's protocol does not match the target group's protocol version "
        "(HTTP/1.1, HTTP/2, gRPC); try --http-version; the Classic Load Balancer has no 464",
    },
    502: {
        _G: "502: the load balancer got no valid response from the backend: it closed the "
        "connection, sent invalid HTTP, or the TLS to it failed",
        _A: "ALB 502: the target closed the connection or sent a malformed response, or the TLS "
        "to the target failed (HTTPS target group); the Classic Load Balancer means the same",
    },
    503: {
        _G: "503: no backend is available (none registered or healthy), or the service is "
        "overloaded or in maintenance",
        _A: "ALB 503: the target group has no registered targets (with all targets unhealthy an "
        "ALB still routes to them); a Classic Load Balancer also answers 503 when no instance is "
        "healthy or its surge queue is full",
    },
    504: {
        _G: "504: the load balancer timed out waiting for the backend",
        _A: "ALB 504: the target did not answer within the idle timeout, or the connection to it "
        "timed out (the targets' security group does not allow the load balancer); the Classic "
        "Load Balancer means the same",
    },
}

#: ``http_status`` for a code of :data:`STATUS_HINTS` in a response that names its backend:
#: the backend answered it, so the load balancer's own causes of that code do not apply.
NAMED_BACKEND_STATUS_HINT: dict[Platform, str] = {
    _G: "the backend itself answered it (the response names its backend, so the load balancer "
    "forwarded the request): the application, or a proxy in front of it on that host, is "
    "failing, overloaded or in maintenance; check its logs",
    _A: "the target itself answered it (the response names its backend, so the ALB forwarded "
    "the request and the target group has targets): the application on the target, or a proxy "
    "in front of it there, is failing, overloaded or in maintenance; check its logs",
}

#: ``http_status`` for a redirect (any 3xx not listed in :data:`STATUS_HINTS`).
REDIRECT_HINT: dict[Platform, str] = {
    _G: "a redirect: compare Location with the URL (http to https, a trailing slash, another "
    "host); add the code to valid_status_codes if it is expected",
    _A: "a redirect, perhaps a listener rule's redirect action: compare Location with the URL; "
    "add the code to valid_status_codes if it is expected",
}


def hint_for(failure: Failure, platform: Platform, status_codes: Iterable[Answer] = ()) -> str | None:
    """The hint for one finding, ``None`` when its reason has none.

    Args:
        failure: the finding.
        platform: whose words to use.
        status_codes: for ``http_status`` and ``backend_not_reached``, the responses the
            finding is about (from the attempts, in any order, repeats allowed), each a
            status code or a ``(code, who answered)`` pair (see :data:`Answer`); the hint
            then names the likely cause of each distinct one, lowest code first, by who
            answered: a code the load balancer also answers itself (503 …) in a response
            that names its backend is the backend's, not the balancer's.

    Returns:
        One line of plain text, without a final full stop.
    """
    reason = failure.reason
    if reason in NO_HINT:
        return None
    if reason is Reason.DNS_UNEXPECTED_ADDRESS and failure.address is not None and failure.address.is_global:
        return PUBLIC_ADDRESS_HINT[platform]
    if reason in BY_RESPONSE:
        answers = sorted({a if isinstance(a, tuple) else (a, None) for a in status_codes}, key=_order)
        return _status_hint(answers, platform, reason)
    return HINTS[reason][platform]


def _order(answer: tuple[int, str | None]) -> tuple[int, str]:
    return answer[0], answer[1] or ""


def _status_hint(answers: list[tuple[int, str | None]], platform: Platform, reason: Reason) -> str:
    """The causes of each distinct answer, the load balancer's own first, then the backends' by code."""
    parts = [_own_hint(code, kind, platform) for code, kind in answers if kind not in (None, NAMED_BACKEND)]
    named = [code for code, kind in answers if kind == NAMED_BACKEND and code in STATUS_HINTS]
    if named:
        codes = ", ".join(str(code) for code in dict.fromkeys(named))
        parts.append(f"{codes}: {NAMED_BACKEND_STATUS_HINT[platform]}")
    others = [
        code for code, kind in answers if kind is None or (kind == NAMED_BACKEND and code not in STATUS_HINTS)
    ]
    parts.extend(_backend_hints(list(dict.fromkeys(others)), platform))
    return "; ".join(dict.fromkeys(parts)) or HINTS[reason][platform]


def _backend_hints(codes: list[int], platform: Platform) -> list[str]:
    """The causes of status codes from backends not known by name; codes without their own share one sentence.

    A code the load balancer also answers itself (:data:`STATUS_HINTS`) may be its own
    unrecognised answer (a Classic Load Balancer's, a custom error page): its causes are given.
    """
    parts = [STATUS_HINTS[code][platform] for code in codes if code in STATUS_HINTS]
    redirects = [str(c) for c in codes if c not in STATUS_HINTS and 300 <= c <= 399]
    others = [str(c) for c in codes if c not in STATUS_HINTS and not 300 <= c <= 399]
    if redirects:
        parts.append(f"{', '.join(redirects)}: {REDIRECT_HINT[platform]}")
    if others:
        parts.append(f"{', '.join(others)}: {HINTS[Reason.HTTP_STATUS][platform]}")
    return parts


def _own_hint(code: int, kind: str, platform: Platform) -> str:
    """The hint for the load balancer's own answer ``code`` of ``kind``."""
    if kind in LOAD_BALANCER_HINTS:
        return f"{code} from the load balancer itself: {LOAD_BALANCER_HINTS[kind][platform]}"
    if code in STATUS_HINTS:
        return STATUS_HINTS[code][platform]
    return f"{code}: {OWN_ERROR_HINT[platform]}"


def failure_hint(result: TargetResult, failure: Failure, attempt: HttpAttempt | None = None) -> str | None:
    """The hint for a finding of ``result``, in the words of ``result.platform``.

    For ``http_status`` and ``backend_not_reached`` the responses come from the attempts:
    ``attempt``'s own when the finding belongs to one request, else those of every
    request to the finding's address that got the same finding.

    Args:
        result: the target's result (platform and attempts).
        failure: one of its findings (target, address or attempt level).
        attempt: the request the finding belongs to, if it is an attempt's own.

    Returns:
        The hint, ``None`` when the reason has none.
    """
    answers: list[Answer] = []
    if failure.reason in BY_RESPONSE:
        attempts = (
            [attempt]
            if attempt is not None
            else [a for r in result.addresses if r.address == failure.address for a in r.attempts]
        )
        answers = [hint_answer(a) for a in attempts if any(f.reason is failure.reason for f in a.failures)]
    return hint_for(failure, result.target.platform, answers)


def hint_answer(attempt: HttpAttempt) -> tuple[int, str | None]:
    """An attempt as :func:`hint_for` needs it: ``(status code, HttpAttempt.answered_by)``."""
    return attempt.status_code or 0, attempt.answered_by
