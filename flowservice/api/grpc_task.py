"""The `grpc` task type: call any gRPC method of an allowed target, with no code.

Params (checked before anything is sent; a bad one fails the task with
`InvalidParams`, never retried):

- `target`: `host:port` allowed by `--allow-target`, or a `--target` name;
- `method`: `package.Service/Method`, as grpcurl writes it;
- `request`: a JSON object in the proto3 JSON mapping;
- `metadata`: a string map sent with the call;
- any other param is a field of the request, over `request`'s own: so an
  input mapping `{"order_id": "tasks.lookup.output.id"}` sets `order_id`.

The message types come from descriptor sets given at start-up
(`--descriptor-set FILE`, grpcurl's `-protoset`), else from the target's
server reflection, read on the target's channel under the call's deadline
(`flowservice.api.reflected`) and cached per target. A method the descriptors do not have
re-reads the target's reflection once, then fails with `grpc.UNKNOWN_METHOD`;
a reply that does not parse drops the cache (the target changed its API)
and fails with `grpc.BAD_REPLY`, retried. A request field that does not
exist fails with `InvalidParams`.

Output: the reply in the proto3 JSON mapping, lowerCamelCase names, as
grpcurl prints it; a server-streaming method's replies as `{"messages": [...]}`,
read no further than `max_output_bytes` (past it: `OutputTooLarge`).
A non-OK status fails the task with error type `grpc.<CODE>` and the status
message; its output holds `code`, `message` and the decoded `google.rpc`
`details`. Codes no retry can fix (`NON_RETRYABLE_CODES`) are never retried.

The call's deadline is the earliest of the task's timeout and the
execution's time left; cancelling the execution cancels the call. It carries
`x-request-id`, `traceparent` and `x-idempotency-key` (`outbound_headers`).
One channel per target, reused, closed on shutdown. Channels connect to the
addresses the allow-list checked (see `OutboundPolicy.checked_addresses`),
resolved once per target, with the target's name as authority. A named
target `grpcs://host:port` is called over TLS, its certificate checked
against `host` and the CAs of `--outbound-ca` (or the system's).
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
from google.protobuf import descriptor_pb2, descriptor_pool, json_format, message_factory
from google.protobuf.message import DecodeError, Message
from google.rpc import error_details_pb2, status_pb2  # noqa: F401  (details' types)

from flowservice.api.reflected import ReflectedTypes
from flowservice.errors import TaskRegistrationError, Violation
from flowservice.limits import Limits
from flowservice.outbound import TARGET_NOT_ALLOWED, OutboundPolicy, TargetNotAllowed
from flowservice.outbound.headers import call_timeout, outbound_headers
from flowservice.outbound.observe import OutboundObserver
from flowservice.outbound.targets import GRPC_TLS, split_address
from flowservice.tasks import TaskContext, TaskFailure

__all__ = ["NON_RETRYABLE_CODES", "GrpcTask", "load_descriptor_sets"]

NON_RETRYABLE_CODES = frozenset(
    {
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.NOT_FOUND,
        grpc.StatusCode.ALREADY_EXISTS,
        grpc.StatusCode.PERMISSION_DENIED,
        grpc.StatusCode.UNAUTHENTICATED,
        grpc.StatusCode.FAILED_PRECONDITION,
        grpc.StatusCode.OUT_OF_RANGE,
        grpc.StatusCode.UNIMPLEMENTED,
    }
)
"""Codes that a retry cannot fix: the task fails at once, whatever its policy."""
INVALID_PARAMS = "InvalidParams"
_METHOD = re.compile(r"^/?([A-Za-z_][\w.]*)\.([A-Za-z_]\w*)/([A-Za-z_]\w*)$")
_OWN_PARAMS = frozenset({"target", "method", "request", "metadata"})
"""The params that are not request fields."""
_STATUS_DETAILS_KEY = "grpc-status-details-bin"
_MIN_RECEIVE = 4 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class _Method:
    """What calling one method needs."""

    path: str
    """`/package.Service/Method`."""
    request: type[Message]
    reply: type[Message]
    server_streaming: bool


class _Target:
    """One target: its channel, and its reflection when it has no descriptor set."""

    def __init__(
        self,
        addresses: Sequence[str],
        port: int,
        authority: str,
        limits: Limits,
        credentials: grpc.ChannelCredentials | None,
    ) -> None:
        ipv4 = [a for a in addresses if ":" not in a]
        if ipv4:
            self.address = "ipv4:" + ",".join(f"{a}:{port}" for a in ipv4)
        else:
            self.address = "ipv6:" + ",".join(f"[{a}]:{port}" for a in addresses)
        options = [
            ("grpc.default_authority", authority),
            # A bound on memory; the output check (JSON, rarely smaller than
            # the binary reply) bounds what is kept. Reflection's answers
            # (descriptors) share it, hence the floor.
            ("grpc.max_receive_message_length", max(4 * limits.max_output_bytes, _MIN_RECEIVE)),
        ]
        if credentials is None:
            self.channel = grpc.aio.insecure_channel(self.address, options=options)
        else:
            # The channel dials checked addresses; the certificate must name the host.
            host = authority.rpartition(":")[0].strip("[]")
            options.append(("grpc.ssl_target_name_override", host))
            self.channel = grpc.aio.secure_channel(self.address, credentials, options=options)
        self.methods: dict[str, _Method] = {}
        self._types: ReflectedTypes | None = None

    async def reflected_method(self, name: str, seconds: float | None) -> _Method | None:
        """The method as the target's reflection describes it, read once and kept."""
        if self._types is None:
            self._types = ReflectedTypes()
        method = _find(self._types.pool, name)
        match = _METHOD.match(name)
        if (
            method is None
            and match is not None
            and await self._types.load(self.channel, f"{match[1]}.{match[2]}", seconds)
        ):
            method = _find(self._types.pool, name)
        return method

    def forget(self) -> None:
        """Drops what reflection said: the next call reads it again."""
        self.methods.clear()
        self._types = None

    async def close(self) -> None:
        self.forget()
        await self.channel.close()


def load_descriptor_sets(paths: Sequence[str]) -> descriptor_pool.DescriptorPool | None:
    """One pool of every FileDescriptorSet in `paths`; TaskRegistrationError when one is bad."""
    if not paths:
        return None
    pool = descriptor_pool.DescriptorPool()
    for path in paths:
        try:
            files = descriptor_pb2.FileDescriptorSet.FromString(Path(path).read_bytes())
        except (OSError, DecodeError) as exc:
            raise TaskRegistrationError(f"--descriptor-set {path}: cannot be read: {exc}") from exc
        for file in files.file:
            try:
                pool.Add(file)
            except TypeError as exc:
                raise TaskRegistrationError(f"--descriptor-set {path}: {exc}") from exc
    return pool


def _find(pool: descriptor_pool.DescriptorPool, name: str) -> _Method | None:
    match = _METHOD.match(name)
    if match is None:
        return None
    service_name = f"{match[1]}.{match[2]}"
    try:
        service = pool.FindServiceByName(service_name)
    except KeyError:  # the reflection's NOT_FOUND; its RpcError goes to the caller
        return None
    method = service.methods_by_name.get(match[3])
    if method is None or method.client_streaming:
        return None
    return _Method(
        f"/{service_name}/{method.name}",
        message_factory.GetMessageClass(method.input_type),
        message_factory.GetMessageClass(method.output_type),
        method.server_streaming,
    )


class GrpcTask:
    """The `grpc` task type; see the module docstring."""

    def __init__(
        self,
        policy: OutboundPolicy,
        limits: Limits,
        descriptors: descriptor_pool.DescriptorPool | None = None,
        observer: OutboundObserver | None = None,
        root_certificates: bytes | None = None,
    ) -> None:
        self._roots = root_certificates
        self._observer = observer or OutboundObserver()
        self._policy = policy
        self._limits = limits
        self._descriptors = descriptors
        self._targets: dict[str, _Target] = {}
        self._lock = asyncio.Lock()

    def check_params(self, params: Mapping[str, Any]) -> Iterator[Violation]:
        """A literal target that is not allowed, or a method that is not `pkg.Service/Method`."""
        target = params.get("target")
        if target is not None and not (
            isinstance(target, str) and self._policy.address_allowed(target)
        ):
            yield Violation(
                "target",
                "the target is not allowed: see --allow-target and --target",
                TARGET_NOT_ALLOWED,
            )
        method = params.get("method")
        if method is not None and not (isinstance(method, str) and _METHOD.match(method)):
            yield Violation("method", "method must be package.Service/Method", "INVALID_METHOD")

    async def run(self, ctx: TaskContext) -> Mapping[str, Any]:
        """Calls the method; see the module docstring for params, output and outcome."""
        name, method = ctx.params.get("target"), ctx.params.get("method")
        allowed = isinstance(name, str) and self._policy.address_allowed(name)
        # Only allowed names become labels: the others could be anything.
        label = name if allowed and isinstance(name, str) else "_refused"
        span = method if isinstance(method, str) and _METHOD.match(method) else "grpc call"
        with self._observer.call("grpc", label, span) as record:
            try:
                output = await self._call(ctx)
            except TaskFailure as failure:
                record.code = failure.error_type.removeprefix("grpc.")
                raise
            record.code = "OK"
            return output

    async def _call(self, ctx: TaskContext) -> Mapping[str, Any]:
        params = ctx.params
        target = await self._target(params.get("target"))
        timeout = call_timeout(ctx)
        try:
            method = await self._method(target, params.get("method"), timeout)
        except grpc.RpcError as exc:  # the reflection call failed
            raise _failure(exc) from None
        fields = params.get("request", {})
        if isinstance(fields, Mapping):
            fields = {**fields, **{k: v for k, v in params.items() if k not in _OWN_PARAMS}}
        request = _request(method, fields)
        metadata = [*_strings(params.get("metadata", {})), *outbound_headers(ctx).items()]
        timeout = call_timeout(ctx)  # what is left after reading the reflection
        try:
            if method.server_streaming:
                return await self._stream(target, method, request, metadata, timeout)
            call: grpc.aio.UnaryUnaryMultiCallable[Message, bytes] = target.channel.unary_unary(
                method.path, request_serializer=_serialize
            )
            reply = await call(request, metadata=metadata, timeout=timeout)
            return _json(_parsed(target, method, reply))
        except grpc.RpcError as exc:
            raise _failure(exc) from None

    async def _stream(
        self,
        target: _Target,
        method: _Method,
        request: Message,
        metadata: list[tuple[str, str]],
        seconds: float | None,
    ) -> Mapping[str, Any]:
        """The replies as `{"messages": [...]}`, no more than the output limit."""
        call: grpc.aio.UnaryStreamMultiCallable[Message, bytes] = target.channel.unary_stream(
            method.path, request_serializer=_serialize
        )
        stream = call(request, metadata=metadata, timeout=seconds)
        messages: list[Any] = []
        size = 0
        try:
            async for reply in stream:
                message = _json(_parsed(target, method, reply))
                size += len(json.dumps(message, separators=(",", ":"))) + 1
                if size > self._limits.max_output_bytes:
                    raise TaskFailure(
                        f"the replies are above the limit of {self._limits.max_output_bytes} "
                        "bytes (max_output_bytes)",
                        error_type="OutputTooLarge",
                        retryable=False,
                    )
                messages.append(message)
        finally:
            stream.cancel()
        return {"messages": messages}

    async def aclose(self) -> None:
        """Closes every channel."""
        targets, self._targets = list(self._targets.values()), {}
        for target in targets:
            await target.close()

    async def _target(self, name: object) -> _Target:
        if not isinstance(name, str) or not self._policy.address_allowed(name):
            raise TaskFailure(
                "the target is not allowed: see --allow-target and --target",
                error_type=TARGET_NOT_ALLOWED,
                retryable=False,
            )
        async with self._lock:  # one channel per target, even when tasks start together
            target = self._targets.get(name)
            if target is None:
                address = self._policy.named.get(name, name)
                tls = address.startswith(GRPC_TLS)
                address = address.removeprefix(GRPC_TLS)
                if "://" in address:
                    raise _invalid("the target names a URL; a grpc target is host:port")
                host, port = split_address(address)
                try:
                    addresses = await self._policy.checked_addresses(host, int(port))
                except TargetNotAllowed as exc:
                    raise TaskFailure(
                        str(exc), error_type=TARGET_NOT_ALLOWED, retryable=False
                    ) from None
                credentials = grpc.ssl_channel_credentials(self._roots) if tls else None
                target = _Target(addresses, int(port), address, self._limits, credentials)
                self._targets[name] = target
            return target

    async def _method(self, target: _Target, name: object, seconds: float | None) -> _Method:
        if not isinstance(name, str) or not _METHOD.match(name):
            raise _invalid("method must be package.Service/Method")
        method = target.methods.get(name)
        if method is None and self._descriptors is not None:
            method = _find(self._descriptors, name)
        for reread in (False, True):
            if method is not None:
                break
            if reread:
                target.forget()
            method = await target.reflected_method(name, seconds)
        if method is None:
            raise TaskFailure(
                f"the target has no unary or server-streaming method {name}",
                error_type="grpc.UNKNOWN_METHOD",
                retryable=False,
            )
        target.methods[name] = method
        return method


def _serialize(message: Message) -> bytes:
    return message.SerializeToString()


def _request(method: _Method, value: object) -> Message:
    if not isinstance(value, Mapping):
        raise _invalid("request must be a JSON object")
    try:
        return json_format.ParseDict(dict(value), method.request())
    except json_format.ParseError as exc:
        raise _invalid(
            f"request does not fit {method.request.DESCRIPTOR.full_name}: {exc}"
        ) from None


def _parsed(target: _Target, method: _Method, reply: bytes) -> Message:
    """The reply, parsed; a reply that does not parse makes the target's API read again."""
    try:
        return method.reply.FromString(reply)
    except DecodeError:
        target.forget()
        raise TaskFailure(
            f"the reply does not parse as {method.reply.DESCRIPTOR.full_name}",
            error_type="grpc.BAD_REPLY",
        ) from None


def _json(message: Message) -> dict[str, Any]:
    """The proto3 JSON mapping, lowerCamelCase names: what grpcurl prints."""
    return json_format.MessageToDict(message)


def _failure(error: grpc.RpcError) -> TaskFailure:
    """`grpc.<CODE>`, from a call's status (an aio call's, or a reflection call's)."""
    call: grpc.Call = error  # type: ignore[assignment]  # every RpcError raised is a Call
    code = call.code()
    output: dict[str, Any] = {"code": code.name, "message": call.details() or ""}
    details = _details(call)
    if details:
        output["details"] = details
    return TaskFailure(
        f"{code.name}: {call.details() or ''}",
        output,
        f"grpc.{code.name}",
        retryable=code not in NON_RETRYABLE_CODES,
    )


def _details(error: grpc.Call) -> list[Any]:
    """The `google.rpc` details of a status, in JSON; those of unknown types are left out."""
    for key, value in error.trailing_metadata() or ():
        if key == _STATUS_DETAILS_KEY and isinstance(value, bytes):
            try:
                status = status_pb2.Status.FromString(value)
            except DecodeError:
                return []
            decoded = []
            for detail in status.details:
                try:
                    decoded.append(json_format.MessageToDict(detail))
                except (TypeError, KeyError):
                    continue
            return decoded
    return []


def _strings(value: object) -> list[tuple[str, str]]:
    if not isinstance(value, Mapping) or not all(isinstance(v, str) for v in value.values()):
        raise _invalid("metadata must be an object of strings")
    return [(str(k).lower(), v) for k, v in value.items()]


def _invalid(message: str) -> TaskFailure:
    return TaskFailure(message, error_type=INVALID_PARAMS, retryable=False)
