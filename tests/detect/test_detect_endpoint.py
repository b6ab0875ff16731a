"""The HTTP black-box client against a local server: happy path, retries, limits and malformed answers."""

import base64
import io
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest
import torch
from helpers.tiny import tiny_marker, tiny_spec
from PIL import Image

from radioactive.endpoint import Endpoint
from radioactive.errors import EndpointError


class Handler(BaseHTTPRequestHandler):
    mode = "ok"
    calls = 0

    def log_message(self, *args):
        pass

    def do_POST(self):
        type(self).calls += 1
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        count = len(body.get("images", body.get("inputs", [])))
        mode = type(self).mode
        if mode == "flaky" and type(self).calls < 3:
            self.send_response(503)
            self.end_headers()
            return
        if mode == "forbidden":
            self.send_response(403)
            self.end_headers()
            return
        if mode == "slow":
            time.sleep(1.0)
        if mode == "ok" or mode == "flaky" or mode == "slow":
            # Score = mean pixel value of the decoded PNG in column 0, so the test can check the encoding.
            scores = []
            for item in body["images"]:
                image = np.asarray(Image.open(io.BytesIO(base64.b64decode(item))), dtype=np.float64) / 255
                scores.append([float(image.mean()), 0.0, 1.0])
            payload = json.dumps({"scores": scores}).encode()
        elif mode == "labels":
            payload = json.dumps({"labels": [1] * count}).encode()
        elif mode == "wrong_count":
            payload = json.dumps({"scores": [[0.0, 1.0]] * (count + 1)}).encode()
        elif mode == "nan":
            payload = b'{"scores": [' + b",".join([b"[NaN, 1.0]"] * count) + b"]}"
        elif mode == "html":
            payload = b"<html>oops</html>"
        elif mode == "huge":
            payload = json.dumps({"scores": [[0.0] * 5000] * count}).encode()
        else:
            payload = json.dumps({"weird": 1}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)


@pytest.fixture()
def server():
    Handler.mode, Handler.calls = "ok", 0
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/predict"
    httpd.shutdown()
    httpd.server_close()


def test_scores_round_trip_and_batches(server):
    images = torch.rand(5, 1, 8, 8)
    endpoint = Endpoint(server, batch_size=2)
    scores = endpoint(images)
    assert scores.shape == (5, 3)
    expected = (images * 255).round().mean(dim=(1, 2, 3)).numpy() / 255
    np.testing.assert_allclose(scores[:, 0], expected, atol=1e-9)
    assert endpoint.requests == 3


def test_labels(server):
    Handler.mode = "labels"
    assert Endpoint(server)(torch.rand(4, 3, 8, 8)).tolist() == [1, 1, 1, 1]


def test_retries_then_success(server):
    Handler.mode = "flaky"
    endpoint = Endpoint(server, retries=3, backoff=0.01)
    assert endpoint(torch.rand(2, 1, 8, 8)).shape == (2, 3)
    assert Handler.calls == 3


def test_bounded_retries_and_no_retry_on_4xx(server):
    Handler.mode = "flaky"
    with pytest.raises(EndpointError, match="failed after 2 attempts"):
        Endpoint(server, retries=1, backoff=0.01)(torch.rand(2, 1, 8, 8))
    Handler.mode, Handler.calls = "forbidden", 0
    with pytest.raises(EndpointError, match="HTTP 403.*not retried"):
        Endpoint(server, retries=3, backoff=0.01)(torch.rand(2, 1, 8, 8))
    assert Handler.calls == 1


def test_timeout(server):
    Handler.mode = "slow"
    with pytest.raises(EndpointError, match="failed after 1 attempts"):
        Endpoint(server, timeout=0.2, retries=0)(torch.rand(1, 1, 8, 8))


@pytest.mark.parametrize("mode,message", [
    ("wrong_count", r"shape \(3, 2\) for 2 images"),
    ("nan", "NaN or infinite"),
    ("html", "did not answer JSON"),
    ("weird", "expected 'scores' or 'labels'"),
])
def test_malformed_answers(server, mode, message):
    Handler.mode = mode
    with pytest.raises(EndpointError, match=message):
        Endpoint(server, retries=0)(torch.rand(2, 1, 8, 8))


def test_response_size_limit(server):
    Handler.mode = "huge"
    with pytest.raises(EndpointError, match="more than 1000 bytes"):
        Endpoint(server, max_response_bytes=1000)(torch.rand(2, 1, 8, 8))


def test_rate_limit(server):
    endpoint = Endpoint(server, batch_size=1, max_rate=20)
    start = time.monotonic()
    endpoint(torch.rand(4, 1, 8, 8))
    assert time.monotonic() - start >= 3 / 20 - 0.01


def test_bad_settings():
    with pytest.raises(EndpointError, match="http:// or https://"):
        Endpoint("file:///etc/passwd")
    with pytest.raises(EndpointError, match="max_rate"):
        Endpoint("http://127.0.0.1:1/x", max_rate=0)
    with pytest.raises(EndpointError, match="failed after 1 attempts"):
        Endpoint("http://127.0.0.1:1/x", retries=0, timeout=1)(torch.rand(1, 1, 4, 4))


def test_blackbox_through_endpoint(server):
    from radioactive.detect import BlackboxSettings, Probes, blackbox
    from radioactive.key import Key
    from radioactive.mark import MarkConfig

    Handler.mode = "ok"
    marker = tiny_marker(tiny_spec(3, 8))
    key = Key.generate(marker.info, seed=0)
    probes = Probes(torch.rand(9, 1, 8, 8), torch.arange(9) % 3)
    settings = BlackboxSettings(num_controls=3, mark=MarkConfig(steps=1, eval_draws=0), model_id=server)
    verdict = blackbox(Endpoint(server), key, probes, marker=marker, settings=settings)
    assert verdict.model_sha256 == server and verdict.counts["probes"] == 9
