"""The shape every interceptor of the hub's gRPC server shares: wrap the behaviour of each
unary-request method, keep its (de)serializers. Methods with streaming requests (server reflection)
and unknown methods (UNIMPLEMENTED) pass as they are."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import grpc

Behavior = Callable[..., Any]


class MethodInterceptor(grpc.aio.ServerInterceptor):
    """Subclasses say how to wrap a unary and a server-streaming method's behaviour."""

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        if handler is None or handler.request_streaming:
            return handler
        method = str(handler_call_details.method)
        decode = self.deserializer(handler.request_deserializer)
        if handler.response_streaming:
            return grpc.unary_stream_rpc_method_handler(
                self.wrap_stream(handler.unary_stream, method),
                request_deserializer=decode,
                response_serializer=handler.response_serializer,
            )
        return grpc.unary_unary_rpc_method_handler(
            self.wrap_unary(handler.unary_unary, method),
            request_deserializer=decode,
            response_serializer=handler.response_serializer,
        )

    def deserializer(self, decode: Callable[[bytes], Any] | None) -> Callable[[bytes], Any] | None:
        """How requests are decoded (as the method does, unless a subclass says otherwise)."""
        return decode

    def wrap_unary(self, behavior: Behavior, method: str) -> Behavior:
        raise NotImplementedError

    def wrap_stream(self, behavior: Behavior, method: str) -> Behavior:
        raise NotImplementedError
