"""Which trace points bound each HTTP phase (Go's httptrace points, as blackbox_exporter)."""

from __future__ import annotations

import pytest

from probe.stages.http_rules import FIRST_BYTE, LAST_BYTE, phase_times

# A request on a new HTTP/2 connection, times in seconds from its start.
EVENTS = {
    "connection.connect_tcp.started": 0.000,
    "connection.connect_tcp.complete": 0.001,
    "connection.start_tls.started": 0.001,
    "connection.start_tls.complete": 0.004,
    "http.send_connection_init.started": 0.005,  # the transport's set-up before it
    "http.send_request_headers.started": 0.006,  # Go's GotConn: the request starts
    FIRST_BYTE: 0.306,  # the read that delivered the HEADERS frame returned
    "http.receive_response_headers.complete": 0.308,  # h2 parsed it
    LAST_BYTE: 0.506,  # the read with END_STREAM returned
}


def test_phases_run_from_the_request_headers_to_the_reads_that_delivered_the_response() -> None:
    phases = phase_times(EVENTS, 0.0, 0.510)  # 0.510: after httpx and probe handled the body

    assert phases.connect == pytest.approx(0.001)
    assert phases.tls == pytest.approx(0.003)
    assert phases.processing == pytest.approx(0.300)
    assert phases.transfer == pytest.approx(0.200)


def test_without_read_times_the_http_layers_events_stand_in() -> None:
    # A kept-alive connection (reuse_connections) has no connect event, so no stream.
    events = {k: v for k, v in EVENTS.items() if k not in (FIRST_BYTE, LAST_BYTE)}
    phases = phase_times(events, 0.0, 0.510)

    assert phases.processing == pytest.approx(0.302)
    assert phases.transfer == pytest.approx(0.202)


def test_no_response_has_no_transfer_and_the_timeout_case_keeps_its_end() -> None:
    assert phase_times(EVENTS, 0.0, None).transfer is None
    # A body that failed half-way: no last read recorded, the failure's time ends it.
    events = {k: v for k, v in EVENTS.items() if k != LAST_BYTE}
    assert phase_times(events, 0.0, 1.306).transfer == pytest.approx(1.0)
