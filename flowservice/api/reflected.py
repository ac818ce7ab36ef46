"""Message types read from a server's reflection, asynchronously, under a deadline.

grpc_reflection's `ProtoReflectionDescriptorDatabase` is synchronous and
sets no deadline: a target that accepts the connection and never answers
would hold a thread for ever. Here one reflection stream asks for the file
that defines a service, then for any dependency the answer lacks, on the
target's own aio channel, with the call's timeout, and cancelled with the
task.
"""

from __future__ import annotations

import grpc
from google.protobuf import descriptor_pb2, descriptor_pool
from grpc_reflection.v1alpha import reflection_pb2

from flowservice.tasks import TaskFailure

__all__ = ["ReflectedTypes"]

_NOT_FOUND = grpc.StatusCode.NOT_FOUND.value[0]
_INFO = "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo"


class ReflectedTypes:
    """The types one target's reflection described so far, in one pool."""

    def __init__(self) -> None:
        self.pool = descriptor_pool.DescriptorPool()
        self._files: set[str] = set()

    async def load(self, channel: grpc.aio.Channel, symbol: str, seconds: float | None) -> bool:
        """Adds the file defining `symbol` and its dependencies; False when the target has none.

        Raises grpc.RpcError when the reflection call fails (no reflection:
        UNIMPLEMENTED; the target is down: UNAVAILABLE).
        """
        open_stream: grpc.aio.StreamStreamMultiCallable[
            reflection_pb2.ServerReflectionRequest, reflection_pb2.ServerReflectionResponse
        ] = channel.stream_stream(
            _INFO,
            request_serializer=reflection_pb2.ServerReflectionRequest.SerializeToString,
            response_deserializer=reflection_pb2.ServerReflectionResponse.FromString,
        )
        call = open_stream(timeout=seconds)
        try:
            await call.write(reflection_pb2.ServerReflectionRequest(file_containing_symbol=symbol))
            files: dict[str, descriptor_pb2.FileDescriptorProto] = {}
            asked = 1
            while asked:
                response = await call.read()
                if not isinstance(response, reflection_pb2.ServerReflectionResponse):
                    break  # EOF: the target ended the stream
                asked -= 1
                if response.HasField("error_response"):
                    if response.error_response.error_code == _NOT_FOUND:
                        return False
                    raise TaskFailure(
                        "the target's reflection failed: " + response.error_response.error_message,
                        error_type="grpc.REFLECTION_FAILED",
                    )
                for raw in response.file_descriptor_response.file_descriptor_proto:
                    proto = descriptor_pb2.FileDescriptorProto.FromString(raw)
                    files.setdefault(proto.name, proto)
                missing = {
                    dependency
                    for proto in files.values()
                    for dependency in proto.dependency
                    if dependency not in files and dependency not in self._files
                }
                for name in sorted(missing):
                    await call.write(reflection_pb2.ServerReflectionRequest(file_by_filename=name))
                    asked += 1
            await call.done_writing()
        finally:
            call.cancel()
        self._add(files)
        return True

    def _add(self, files: dict[str, descriptor_pb2.FileDescriptorProto]) -> None:
        """Adds `files` to the pool, each after its dependencies."""

        def add(name: str) -> None:
            if name in self._files or name not in files:
                return
            self._files.add(name)
            for dependency in files[name].dependency:
                add(dependency)
            self.pool.Add(files[name])

        for name in files:
            add(name)
