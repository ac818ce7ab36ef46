"""The `http` task type: one HTTP request to an allowed target.

Params (all checked before anything is sent; a bad one fails the task with
`InvalidParams`, never retried):

- `url`: an http(s) URL, or `target` (a `--target` name whose value is a URL)
  plus `path`;
- `method`: default GET, or POST when there is a `body`;
- `headers`, `query`: string maps; `body`: any JSON value, sent as JSON;
- `follow_redirects`: false by default (each hop must be allowed too).

Output: `status`, `headers` (only those in `RESPONSE_HEADERS`), and `body`:
the parsed JSON when the response says it is JSON, else the text. A body
larger than `max_output_bytes` fails the task with `OutputTooLarge`: the
task stops reading there, and truncates nothing silently.

Outcome: 2xx succeeds. 408, 429 and 5xx fail with error type `http.<code>`
(`http.503`), retried by the task's policy, waiting at least the response's
`Retry-After` (within the policy's `maximum_interval`); any other status
fails with `http.<code>` and is never retried. A connection failure is
`http.ConnectError` (or the name of the transport error), retried;
`http.TooManyRedirects` is not.

One `httpx.AsyncClient` (one connection pool) serves every `http` task of a
server, TLS verified (against `--outbound-ca` when set), closed on
shutdown. Its network backend resolves each host and checks every address
(`OutboundPolicy.checked_addresses`) before connecting to a checked one,
so a hostname that resolves to a cloud metadata address is refused.
"""

from __future__ import annotations

import json
import ssl
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any

import httpcore
import httpx

from flowservice.errors import Violation
from flowservice.limits import Limits
from flowservice.outbound.headers import call_timeout, outbound_headers
from flowservice.outbound.observe import OutboundObserver
from flowservice.outbound.targets import TARGET_NOT_ALLOWED, OutboundPolicy, TargetNotAllowed
from flowservice.tasks import TaskContext, TaskFailure

__all__ = ["INVALID_PARAMS", "RESPONSE_HEADERS", "RETRYABLE_STATUSES", "HttpTask"]

INVALID_PARAMS = "InvalidParams"
RESPONSE_HEADERS = (
    "content-type",
    "content-length",
    "etag",
    "last-modified",
    "location",
    "retry-after",
    "x-request-id",
)
"""The response headers a task's output keeps (lower-case); the others are dropped."""
RETRYABLE_STATUSES = frozenset({408, 429})
"""Statuses below 500 that a retry may fix; every 5xx may too."""
_DEFAULT_PORTS = {"http": 80, "https": 443}
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


class HttpTask:
    """The `http` task type: requests through one shared pool, to allowed targets only."""

    def __init__(
        self,
        policy: OutboundPolicy,
        limits: Limits,
        observer: OutboundObserver | None = None,
        ca_file: str = "",
    ) -> None:
        self._ca_file = ca_file
        self._policy = policy
        self._limits = limits
        self._observer = observer or OutboundObserver()
        self._client: httpx.AsyncClient | None = None

    def check_params(self, params: Mapping[str, Any]) -> Iterator[Violation]:
        """A literal `url` or `target` that is not allowed (validation)."""
        if "url" in params:
            url = params["url"]
            if not isinstance(url, str) or not self._policy.url_allowed(url):
                yield _refused("url", "url")
        elif "target" in params:
            target = params["target"]
            if not isinstance(target, str) or "://" not in self._policy.named.get(target, ""):
                yield _refused("target", "target (a --target name whose value is a URL)")

    async def run(self, ctx: TaskContext) -> Mapping[str, Any]:
        """Sends the request; see the module docstring for params, output and outcome."""
        request = self._request(ctx.params)
        try:
            url = httpx.URL(request["url"])
        except httpx.InvalidURL:
            raise _invalid("url is not a valid URL") from None
        target = f"{url.host}:{url.port or _DEFAULT_PORTS.get(url.scheme, 0)}"
        with self._observer.call("http", target, f"HTTP {request['method']}") as record:
            headers = {**request.pop("headers"), **outbound_headers(ctx)}
            timeout = call_timeout(ctx)
            try:
                async with self._pool().stream(
                    **request, headers=headers, timeout=httpx.Timeout(timeout)
                ) as response:
                    record.code = str(response.status_code)
                    body = await self._read(response)
            except TargetNotAllowed as exc:
                record.code = TARGET_NOT_ALLOWED
                raise TaskFailure(
                    str(exc), error_type=TARGET_NOT_ALLOWED, retryable=False
                ) from None
            except httpx.RequestError as exc:
                # A transport error may pass (retried); too many redirects will not.
                record.code = type(exc).__name__
                raise TaskFailure(
                    f"{type(exc).__name__} calling {request['url']}",
                    error_type=f"http.{type(exc).__name__}",
                    retryable=isinstance(exc, httpx.TransportError),
                ) from None
        return _outcome(response, body)

    async def aclose(self) -> None:
        """Closes the connection pool."""
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    def _pool(self) -> httpx.AsyncClient:
        if self._client is None:
            verify = ssl.create_default_context(cafile=self._ca_file) if self._ca_file else True
            transport = httpx.AsyncHTTPTransport(verify=verify, retries=0)
            # httpx offers no public way to set the network backend of its pool.
            transport._pool._network_backend = _CheckedBackend(self._policy)
            self._client = httpx.AsyncClient(
                transport=transport,
                follow_redirects=False,
                event_hooks={"request": [self._check_hop]},
            )
        return self._client

    async def _check_hop(self, request: httpx.Request) -> None:
        """Every request, redirects included, goes to an allowed URL."""
        if not self._policy.url_allowed(str(request.url)):
            raise TargetNotAllowed(f"{request.url.host} is not an allowed target")

    def _request(self, params: Mapping[str, Any]) -> dict[str, Any]:
        """The arguments of `AsyncClient.stream` for `params`; TaskFailure when one is bad."""
        url = self._url(params)
        body = params.get("body")
        method = params.get("method", "POST" if body is not None else "GET")
        if not isinstance(method, str) or method.upper() not in _METHODS:
            raise _invalid("method must be one of " + ", ".join(sorted(_METHODS)))
        request: dict[str, Any] = {
            "method": method.upper(),
            "url": url,
            "headers": _strings(params, "headers"),
            "params": _strings(params, "query"),
            "follow_redirects": params.get("follow_redirects") is True,
        }
        if body is not None:
            request["json"] = body
        return request

    def _url(self, params: Mapping[str, Any]) -> str:
        if "url" in params:
            url = params["url"]
            if not isinstance(url, str):
                raise _invalid("url must be a string")
        else:
            base = self._policy.named.get(str(params.get("target", "")), "")
            path = params.get("path", "")
            if "://" not in base or not isinstance(path, str):
                raise TaskFailure(
                    "url or target (a --target name whose value is a URL) is required, "
                    "and path must be a string",
                    error_type=TARGET_NOT_ALLOWED if "target" in params else INVALID_PARAMS,
                    retryable=False,
                )
            url = base.rstrip("/") + "/" + path.lstrip("/") if path else base
        if not self._policy.url_allowed(url):
            raise TaskFailure(
                "the url is not an allowed target", error_type=TARGET_NOT_ALLOWED, retryable=False
            )
        return url

    async def _read(self, response: httpx.Response) -> bytes:
        """The body, read no further than `max_output_bytes`."""
        limit = self._limits.max_output_bytes
        chunks: list[bytes] = []
        size = 0
        async for chunk in response.aiter_bytes():
            size += len(chunk)
            if size > limit:
                raise TaskFailure(
                    f"the response body is above the limit of {limit} bytes (max_output_bytes)",
                    {"status": response.status_code},
                    "OutputTooLarge",
                    retryable=False,
                )
            chunks.append(chunk)
        return b"".join(chunks)


def _outcome(response: httpx.Response, body: bytes) -> Mapping[str, Any]:
    """The output, or a TaskFailure that says whether a retry may help."""
    output = {
        "status": response.status_code,
        "headers": {k: v for k, v in response.headers.items() if k in RESPONSE_HEADERS},
        "body": _decoded(response, body),
    }
    status = response.status_code
    if 200 <= status < 300:
        return output
    retryable = status >= 500 or status in RETRYABLE_STATUSES
    raise TaskFailure(
        f"HTTP {status} {response.reason_phrase}",
        output,
        f"http.{status}",
        retryable=retryable,
        retry_after=_retry_after(response.headers.get("retry-after")) if retryable else None,
    )


def _decoded(response: httpx.Response, body: bytes) -> Any:
    """Parsed JSON when the response is JSON (and parses), else text."""
    text = body.decode(response.charset_encoding or "utf-8", errors="replace")
    if "json" in response.headers.get("content-type", ""):
        try:
            return json.loads(text)
        except ValueError:
            pass
    return text


def _retry_after(value: str | None) -> float | None:
    """Seconds from a `Retry-After` header (seconds or an HTTP date); None when absent or bad."""
    if not value:
        return None
    if value.strip().isdigit():
        return float(value.strip())
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max((when - datetime.now(UTC)).total_seconds(), 0.0)


def _strings(params: Mapping[str, Any], name: str) -> dict[str, str]:
    value = params.get(name, {})
    if not isinstance(value, Mapping) or not all(
        isinstance(v, str | int | float) and not isinstance(v, bool) for v in value.values()
    ):
        raise _invalid(f"{name} must be an object of strings")
    return {str(k): str(v) for k, v in value.items()}


def _invalid(message: str) -> TaskFailure:
    return TaskFailure(message, error_type=INVALID_PARAMS, retryable=False)


def _refused(field: str, what: str) -> Violation:
    return Violation(
        field,
        f"the {what} is not an allowed target: see --allow-target and --target",
        TARGET_NOT_ALLOWED,
    )


class _CheckedBackend(httpcore.AsyncNetworkBackend):
    """Connects only to addresses the policy checked (no second DNS lookup)."""

    def __init__(self, policy: OutboundPolicy) -> None:
        self._policy = policy
        self._backend = httpcore.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,  # noqa: ASYNC109  (httpcore's signature)
        local_address: str | None = None,
        socket_options: Any = None,
    ) -> httpcore.AsyncNetworkStream:
        addresses = await self._policy.checked_addresses(host, port)
        error: Exception | None = None
        for address in addresses:
            try:
                return await self._backend.connect_tcp(
                    address, port, timeout, local_address, socket_options
                )
            except httpcore.ConnectError as exc:
                error = exc
        assert error is not None
        raise error

    async def sleep(self, seconds: float) -> None:
        await self._backend.sleep(seconds)
