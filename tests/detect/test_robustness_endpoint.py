"""The black-box HTTP endpoint: slow, failing, lying and oversized servers end in a clear EndpointError or
a bounded retry, never a hang. Every server here is local (127.0.0.1) and stops with its test."""

from __future__ import annotations

import socket
import threading
import time

import numpy as np
import pytest
import torch
from helpers.http_test_server import image_count, reply, serve

from radioactive.endpoint import Endpoint
from radioactive.errors import EndpointError

IMAGES = torch.rand(3, 1, 8, 8, generator=torch.Generator().manual_seed(0))


def _endpoint(url: str, **kwargs) -> Endpoint:
    options = {"timeout": 0.5, "retries": 1, "backoff": 0.01, "batch_size": 8}
    options.update(kwargs)
    return Endpoint(url, **options)


def _scores(body: bytes) -> list[list[float]]:
    return np.arange(image_count(body) * 4, dtype=float).reshape(-1, 4).tolist()


def test_honest_server_round_trip():
    with serve(lambda req, body: reply(req, {"scores": _scores(body)})) as url:
        out = _endpoint(url, batch_size=2)(IMAGES)
    assert out.shape == (3, 4) and out[2, 0] == 0.0


@pytest.mark.parametrize(
    "payload, message",
    [
        ({"scores": [[1.0, 2.0]]}, r"shape \(1, 2\) for 3 images"),
        ({"scores": [[1.0, float("nan")]] * 3}, "NaN or infinite"),
        ({"scores": [[1.0, float("inf")]] * 3}, "NaN or infinite"),
        ({"scores": [[1.0, 2.0], [1.0], [3.0, 4.0]]}, "not a numeric array"),
        ({"scores": [["a", "b"]] * 3}, "not a numeric array"),
        ({"scores": [[10**400, 1]] * 3}, "not a numeric array|NaN or infinite"),
        ({"scores": [[[1.0]]] * 3}, "expected"),
        ({"scores": {"a": 1}}, "not a numeric array|expected"),
        ({"error": "overloaded"}, "keys \\['error'\\]"),
        ("just a string", "not a numeric array|expected"),
        (None, "not a numeric array|expected"),
        (True, "expected"),
    ],
)
def test_lying_server_is_refused(payload, message):
    with serve(lambda req, body: reply(req, payload)) as url:
        with pytest.raises(EndpointError, match=message):
            _endpoint(url)(IMAGES)


@pytest.mark.parametrize(
    "raw",
    [b"<html>oops</html>", b"", b"\xff\xfe\x00garbage", b"[" * 100_000, b'{"scores": ' * 50_000, b"[1, 2"],
)
def test_non_json_answers_are_refused(raw):
    with serve(lambda req, body: reply(req, None, raw=raw)) as url:
        with pytest.raises(EndpointError, match="JSON|not a numeric|expected"):
            _endpoint(url)(IMAGES)


def test_oversized_answer_is_refused_without_reading_it_all():
    def flood(req, body):
        req.send_response(200)
        req.send_header("Content-Type", "application/json")
        req.end_headers()  # no Content-Length: the client must bound what it reads
        chunk = b"[" + b"1.0," * 16_000
        deadline = time.monotonic() + 10
        while not req.stop.is_set() and time.monotonic() < deadline:
            req.wfile.write(chunk)

    start = time.monotonic()
    with serve(flood) as url:
        with pytest.raises(EndpointError, match="more than 100000 bytes"):
            _endpoint(url, max_response_bytes=100_000)(IMAGES)
    assert time.monotonic() - start < 5


def test_slow_server_times_out_with_bounded_retries():
    def slow(req, body):
        req.stop.wait(5)

    start = time.monotonic()
    with serve(slow) as url:
        endpoint = _endpoint(url, timeout=0.3, retries=2)
        with pytest.raises(EndpointError, match="failed after 3 attempts.*(timed out|Timeout)"):
            endpoint(IMAGES)
    assert endpoint.requests == 3 and time.monotonic() - start < 4


def test_dripping_server_hits_the_total_deadline():
    """Bytes arrive just faster than the socket timeout, forever: only a per-request deadline stops it."""

    def drip(req, body):
        req.send_response(200)
        req.send_header("Content-Type", "application/json")
        req.send_header("Content-Length", "1000000")
        req.end_headers()
        req.wfile.flush()
        give_up = time.monotonic() + 8  # without a deadline the client would wait all of this
        while not req.stop.wait(0.1) and time.monotonic() < give_up:
            req.wfile.write(b" ")
            req.wfile.flush()

    start = time.monotonic()
    with serve(drip) as url:
        with pytest.raises(EndpointError, match="failed after 2 attempts.*1 s deadline"):
            _endpoint(url, timeout=0.5, deadline=1, retries=1)(IMAGES)
    assert time.monotonic() - start < 6


def test_failing_server_is_retried_a_bounded_number_of_times():
    with serve(lambda req, body: reply(req, {"detail": "boom"}, status=503)) as url:
        endpoint = _endpoint(url, retries=3)
        with pytest.raises(EndpointError, match="failed after 4 attempts.*HTTP 503"):
            endpoint(IMAGES)
    assert endpoint.requests == 4


def test_transient_failure_then_success():
    answers = iter([500, 429, 200])

    def flaky(req, body):
        status = next(answers)
        reply(req, {"scores": _scores(body)} if status == 200 else {}, status=status)

    with serve(flaky) as url:
        endpoint = _endpoint(url, retries=2)
        assert endpoint(IMAGES).shape == (3, 4)
    assert endpoint.requests == 3


def test_client_errors_are_not_retried():
    with serve(lambda req, body: reply(req, {}, status=401)) as url:
        endpoint = _endpoint(url, retries=5)
        with pytest.raises(EndpointError, match="HTTP 401.*not retried"):
            endpoint(IMAGES)
    assert endpoint.requests == 1


def test_truncated_body_and_hangup_are_clear_errors():
    def truncated(req, body):
        req.send_response(200)
        req.send_header("Content-Length", "5000")
        req.end_headers()
        req.wfile.write(b'{"scores": [[1')
        req.wfile.flush()
        req.close_connection = True
        req.connection.shutdown(socket.SHUT_RDWR)

    def hangup(req, body):
        req.close_connection = True
        req.connection.shutdown(socket.SHUT_RDWR)

    for handler in (truncated, hangup):
        with serve(handler) as url:
            with pytest.raises(EndpointError):
                _endpoint(url, retries=1)(IMAGES)


def test_not_http_at_all():
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(4)
    server.settimeout(0.2)
    stop = threading.Event()

    def garbage():
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except OSError:
                continue
            with conn:
                conn.sendall(b"SSH-2.0-OpenSSH_9.6\r\n\x00\x01garbage\r\n\r\n")

    thread = threading.Thread(target=garbage, daemon=True)
    thread.start()
    try:
        with pytest.raises(EndpointError):
            _endpoint(f"http://127.0.0.1:{server.getsockname()[1]}/", retries=1)(IMAGES)
    finally:
        stop.set()
        thread.join(2)
        server.close()


def test_refused_connection_is_bounded():
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    start = time.monotonic()
    with pytest.raises(EndpointError, match="failed after 3 attempts"):
        _endpoint(f"http://127.0.0.1:{port}/", retries=2)(IMAGES)
    assert time.monotonic() - start < 3


def test_rate_limit_spaces_requests():
    with serve(lambda req, body: reply(req, {"scores": _scores(body)})) as url:
        endpoint = _endpoint(url, batch_size=1, max_rate=20)
        start = time.monotonic()
        endpoint(IMAGES)
    assert time.monotonic() - start >= 2 / 20 * 0.9


def test_bad_configuration_is_refused():
    for kwargs in ({"timeout": 0}, {"deadline": 0}, {"retries": -1}, {"max_rate": 0}, {"encoding": "jpeg"}, {"max_response_bytes": 0}):
        with pytest.raises(EndpointError):
            Endpoint("http://127.0.0.1:1/", **kwargs)
    with pytest.raises(EndpointError, match="http:// or https://"):
        Endpoint("file:///etc/passwd")
