"""A black-box suspect behind HTTP: images in, JSON scores out.

Protocol: ``POST`` to the URL with JSON ``{"images": [<base64 PNG>, ...]}`` (or ``{"inputs": [nested
lists]}`` with ``encoding="list"``); the answer is JSON: ``{"scores": [[...], ...]}`` (logits or
probabilities, one row per image), ``{"labels": [...]}``, or a bare list of either. Requests have a timeout,
transient failures (connection errors, timeouts, HTTP 429 and 5xx) are retried a bounded number of times
with exponential back-off, requests are spaced to a maximum rate, and responses larger than a limit are
refused. Anything malformed raises :class:`radioactive.errors.EndpointError` saying what was wrong.
"""

from __future__ import annotations

import base64
import http.client
import io
import json
import logging
import math
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from .errors import EndpointError

__all__ = ["Endpoint"]

log = logging.getLogger(__name__)
_RETRY_STATUS = {429, 500, 502, 503, 504}


def _png_base64(image: torch.Tensor) -> str:
    from PIL import Image

    array = (image.detach().cpu().clamp(0, 1) * 255).round().to(torch.uint8)  # (c, H, W)
    array = array[0].numpy() if array.shape[0] == 1 else array.permute(1, 2, 0).numpy()
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


class Endpoint:
    """A callable ``images (B, c, H, W) in [0, 1] -> np.ndarray`` that queries a model over HTTP.

    Args:
        url: the endpoint (``http://`` or ``https://``).
        timeout: seconds without progress (connecting, or between two reads) before a request fails.
        deadline: seconds for a whole answer, however slowly it arrives (default: 4 x timeout).
        retries: extra attempts after a transient failure (0: none).
        backoff: first retry delay in seconds, doubled each time.
        max_rate: at most this many requests per second (None: unlimited).
        max_response_bytes: refuse larger responses.
        batch_size: images per request.
        encoding: ``png`` (base64 PNG strings under ``images``) or ``list`` (nested lists under ``inputs``).
        headers: extra HTTP headers (e.g. an authorisation token).
        output: what the scores are, for the caller (``logits``, ``probs``, ``labels`` or ``auto``).

    Examples:
        >>> endpoint = Endpoint("http://127.0.0.1:8000/predict", timeout=10, retries=2, max_rate=20)
    """

    def __init__(
        self,
        url: str,
        *,
        timeout: float = 30.0,
        deadline: float | None = None,
        retries: int = 3,
        backoff: float = 0.5,
        max_rate: float | None = None,
        max_response_bytes: int = 16 << 20,
        batch_size: int = 64,
        encoding: str = "png",
        headers: Mapping[str, str] | None = None,
        output: str = "auto",
    ):
        if not url.startswith(("http://", "https://")):
            raise EndpointError(f"endpoint URL must start with http:// or https://, got {url!r}")
        if encoding not in ("png", "list"):
            raise EndpointError(f"unknown encoding {encoding!r}; choose from ['png', 'list']")
        if timeout <= 0 or (deadline is not None and deadline <= 0) or retries < 0 or batch_size < 1 or max_response_bytes < 1:
            raise EndpointError(
                "need timeout > 0, deadline > 0, retries >= 0, batch_size >= 1 and max_response_bytes >= 1 "
                f"(command line: --endpoint-timeout, --endpoint-retries, --endpoint-max-bytes); got timeout={timeout}, "
                f"deadline={deadline}, retries={retries}, batch_size={batch_size}, max_response_bytes={max_response_bytes}"
            )
        if max_rate is not None and max_rate <= 0:
            raise EndpointError(f"max_rate must be > 0 requests per second, got {max_rate}")
        self.url = url
        self.timeout = float(timeout)
        self.deadline = 4 * self.timeout if deadline is None else float(deadline)
        self.retries = int(retries)
        self.backoff = float(backoff)
        self.min_interval = 0.0 if max_rate is None else 1.0 / float(max_rate)
        self.max_response_bytes = int(max_response_bytes)
        self.batch_size = int(batch_size)
        self.encoding = encoding
        self.headers = {"Content-Type": "application/json", **dict(headers or {})}
        self.output = output
        self.requests = 0
        self._last = -math.inf

    def __repr__(self) -> str:
        return f"Endpoint({self.url!r}, timeout={self.timeout}, retries={self.retries})"

    def __call__(self, images: torch.Tensor) -> np.ndarray:
        if images.dim() != 4:
            raise EndpointError(f"images must be (B, c, H, W), got {tuple(images.shape)}")
        chunks = [self._query(images[start : start + self.batch_size])
                  for start in range(0, images.shape[0], self.batch_size)]
        if not chunks:
            return np.zeros((0,), dtype=np.float64)
        if len({c.ndim for c in chunks}) != 1 or (chunks[0].ndim == 2 and len({c.shape[1] for c in chunks}) != 1):
            raise EndpointError("the endpoint answered batches with inconsistent shapes")
        return np.concatenate(chunks)

    # -- one request ---------------------------------------------------------------------------------
    def _payload(self, images: torch.Tensor) -> bytes:
        if self.encoding == "png":
            body = {"images": [_png_base64(image) for image in images]}
        else:
            body = {"inputs": images.detach().cpu().float().tolist()}
        return json.dumps(body).encode()

    def _wait_for_rate(self) -> None:
        wait = self._last + self.min_interval - time.monotonic()
        if wait > 0:
            time.sleep(wait)
        self._last = time.monotonic()

    def _query(self, images: torch.Tensor) -> np.ndarray:
        payload = self._payload(images)
        last_error = "no attempt"
        for attempt in range(self.retries + 1):
            if attempt:
                time.sleep(self.backoff * 2 ** (attempt - 1))
            self._wait_for_rate()
            self.requests += 1
            request = urllib.request.Request(self.url, data=payload, headers=self.headers, method="POST")
            try:
                with urllib.request.urlopen(request, timeout=self.timeout) as response:  # noqa: S310 - user URL
                    body = self._read_bounded(response)
            except urllib.error.HTTPError as exc:
                last_error = f"HTTP {exc.code} {exc.reason}"
                if exc.code in _RETRY_STATUS:
                    log.warning("endpoint %s: %s (attempt %d)", self.url, last_error, attempt + 1)
                    continue
                raise EndpointError(f"endpoint {self.url} answered {last_error}; not retried") from None
            except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
                reason = getattr(exc, "reason", exc)
                last_error = f"{type(exc).__name__}: {reason}"
                log.warning("endpoint %s: %s (attempt %d)", self.url, last_error, attempt + 1)
                continue
            if len(body) > self.max_response_bytes:
                raise EndpointError(
                    f"endpoint {self.url} sent more than {self.max_response_bytes} bytes for {len(images)} images; "
                    "raise max_response_bytes if that is expected"
                )
            return self._parse(body, len(images))
        raise EndpointError(f"endpoint {self.url} failed after {self.retries + 1} attempts (last: {last_error})")

    def _read_bounded(self, response: Any) -> bytes:
        # The socket timeout bounds each read, not the answer: a server dripping bytes would never time out.
        deadline = time.monotonic() + self.deadline
        parts: list[bytes] = []
        size = 0
        while size <= self.max_response_bytes:
            chunk = response.read1(min(1 << 16, self.max_response_bytes + 1 - size))
            if not chunk:
                break
            parts.append(chunk)
            size += len(chunk)
            if time.monotonic() > deadline:
                raise TimeoutError(f"no complete answer within the {self.deadline:g} s deadline")
        return b"".join(parts)

    def _parse(self, body: bytes, count: int) -> np.ndarray:
        try:
            data: Any = json.loads(body)
        except RecursionError:
            raise EndpointError(f"endpoint {self.url} answered JSON nested too deeply") from None
        except (ValueError, UnicodeDecodeError):
            snippet = body[:80].decode("utf-8", "replace")
            raise EndpointError(f"endpoint {self.url} did not answer JSON (starts with {snippet!r})") from None
        if isinstance(data, dict):
            for name in ("scores", "logits", "probs", "probabilities", "labels", "predictions", "outputs"):
                if name in data:
                    data = data[name]
                    break
            else:
                raise EndpointError(
                    f"endpoint {self.url} answered a JSON object with keys {sorted(data)[:8]}; expected 'scores' or 'labels'"
                )
        try:
            array = np.asarray(data, dtype=np.float64)
        except (TypeError, ValueError, OverflowError, RecursionError):
            raise EndpointError(f"endpoint {self.url} answered scores that are not a numeric array") from None
        if array.ndim not in (1, 2) or array.shape[0] != count:
            raise EndpointError(
                f"endpoint {self.url} answered shape {array.shape} for {count} images; expected ({count}, classes) "
                f"scores or ({count},) labels"
            )
        if not np.all(np.isfinite(array)):
            raise EndpointError(f"endpoint {self.url} answered NaN or infinite scores")
        return array
