"""The one AgentHub error hierarchy, and the one table mapping each error to its transports' codes.

Every error the hub or the SDK raises on purpose is an `AgentHubError`. They subclass a2a-sdk's
`A2AError` so the stock A2A transports catch them; `STATUS` below maps each class to its gRPC
status, HTTP status and CLI exit code, and nothing else in the code base invents codes.
"""

from __future__ import annotations

import contextlib
from typing import NamedTuple

import grpc
from a2a.utils.errors import (
    A2AError,
    ContentTypeNotSupportedError,
    ExtendedAgentCardNotConfiguredError,
    ExtensionSupportRequiredError,
    InternalError,
    InvalidAgentResponseError,
    InvalidParamsError,
    InvalidRequestError,
    JSONParseError,
    MethodNotFoundError,
    PushNotificationNotSupportedError,
    TaskNotCancelableError,
    TaskNotFoundError,
    UnsupportedOperationError,
    VersionNotSupportedError,
)
from google.protobuf.message import DecodeError
from google.rpc import error_details_pb2, status_pb2


class AgentHubError(A2AError):
    """Base of every error AgentHub raises on purpose."""

    message = "AgentHub error"


class InvalidRequest(AgentHubError):
    """The caller sent something malformed (empty message, bad id, bad argument)."""

    message = "invalid request"


class MessageTooLarge(InvalidRequest):
    """A message exceeded the hub's configured size limit."""

    message = "message too large"


class AgentNotFound(AgentHubError):
    """No agent is registered under that name."""

    message = "agent not found"


class ThreadNotFound(AgentHubError):
    """No thread (A2A context) has that id."""

    message = "thread not found"


class TopicNotFound(AgentHubError):
    """No topic has that name."""

    message = "topic not found"


class AgentUnavailable(AgentHubError):
    """The agent could not be reached after the configured attempts."""

    message = "agent unavailable"


class HubUnavailable(AgentHubError):
    """The hub could not be reached, or cannot serve the call right now (UNAVAILABLE: retry)."""

    message = "hub unavailable"


class StoreUnavailable(HubUnavailable):
    """The thread store cannot be read right now (routing goes on; retry the read shortly)."""

    message = "thread store unavailable"


class LogUnavailable(HubUnavailable):
    """The log cannot take the request right now; nothing was accepted, retry shortly."""

    message = "log unavailable"


class ConfigError(AgentHubError):
    """Configuration is invalid or incomplete."""

    message = "invalid configuration"


class Unauthenticated(AgentHubError):
    """The call carries no credential the hub accepts (missing, unknown, revoked, expired, forged)."""

    message = "authentication required"


class PermissionDenied(AgentHubError):
    """The caller is known but its role or the policy does not allow this call."""

    message = "permission denied"


class RateLimited(AgentHubError):
    """The caller is over its rate limit or in-flight quota; retry after `retry_after_s`."""

    message = "rate limit exceeded"

    def __init__(self, message: str | None = None, retry_after_s: float = 1.0) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class Status(NamedTuple):
    """How one error class shows on each transport."""

    grpc: grpc.StatusCode
    http: int
    jsonrpc: int
    reason: str
    exit_code: int


# JSON-RPC codes: the A2A v1 specification's where it defines one; AgentHub's own errors use
# the server range -32040..-32059 (A2A reserves -32001..-32009).
STATUS: dict[type[Exception], Status] = {
    InvalidRequest: Status(grpc.StatusCode.INVALID_ARGUMENT, 400, -32602, "INVALID_PARAMS", 2),
    MessageTooLarge: Status(grpc.StatusCode.INVALID_ARGUMENT, 413, -32602, "MESSAGE_TOO_LARGE", 2),
    AgentNotFound: Status(grpc.StatusCode.NOT_FOUND, 404, -32040, "AGENT_NOT_FOUND", 4),
    ThreadNotFound: Status(grpc.StatusCode.NOT_FOUND, 404, -32041, "THREAD_NOT_FOUND", 4),
    TopicNotFound: Status(grpc.StatusCode.NOT_FOUND, 404, -32042, "TOPIC_NOT_FOUND", 4),
    AgentUnavailable: Status(grpc.StatusCode.UNAVAILABLE, 503, -32050, "AGENT_UNAVAILABLE", 5),
    HubUnavailable: Status(grpc.StatusCode.UNAVAILABLE, 503, -32051, "HUB_UNAVAILABLE", 5),
    StoreUnavailable: Status(grpc.StatusCode.UNAVAILABLE, 503, -32053, "STORE_UNAVAILABLE", 5),
    LogUnavailable: Status(grpc.StatusCode.UNAVAILABLE, 503, -32054, "LOG_UNAVAILABLE", 5),
    ConfigError: Status(grpc.StatusCode.FAILED_PRECONDITION, 400, -32052, "INVALID_CONFIGURATION", 2),
    Unauthenticated: Status(grpc.StatusCode.UNAUTHENTICATED, 401, -32055, "UNAUTHENTICATED", 6),
    PermissionDenied: Status(grpc.StatusCode.PERMISSION_DENIED, 403, -32056, "PERMISSION_DENIED", 6),
    RateLimited: Status(grpc.StatusCode.RESOURCE_EXHAUSTED, 429, -32057, "RATE_LIMITED", 5),
    AgentHubError: Status(grpc.StatusCode.INTERNAL, 500, -32603, "INTERNAL_ERROR", 1),
    # a2a-sdk's own errors, as the A2A v1 specification maps them (section 5.4, "Error Code
    # Mappings"; a2a-sdk's own table differs in places: UNIMPLEMENTED, 409, 415 and 502 below).
    TaskNotFoundError: Status(grpc.StatusCode.NOT_FOUND, 404, -32001, "TASK_NOT_FOUND", 4),
    TaskNotCancelableError: Status(
        grpc.StatusCode.FAILED_PRECONDITION, 409, -32002, "TASK_NOT_CANCELABLE", 2
    ),
    PushNotificationNotSupportedError: Status(
        grpc.StatusCode.UNIMPLEMENTED, 400, -32003, "PUSH_NOTIFICATION_NOT_SUPPORTED", 2
    ),
    UnsupportedOperationError: Status(grpc.StatusCode.UNIMPLEMENTED, 400, -32004, "UNSUPPORTED_OPERATION", 2),
    ContentTypeNotSupportedError: Status(
        grpc.StatusCode.INVALID_ARGUMENT, 415, -32005, "CONTENT_TYPE_NOT_SUPPORTED", 2
    ),
    InvalidAgentResponseError: Status(grpc.StatusCode.INTERNAL, 502, -32006, "INVALID_AGENT_RESPONSE", 1),
    ExtendedAgentCardNotConfiguredError: Status(
        grpc.StatusCode.FAILED_PRECONDITION, 400, -32007, "EXTENDED_AGENT_CARD_NOT_CONFIGURED", 2
    ),
    ExtensionSupportRequiredError: Status(
        grpc.StatusCode.FAILED_PRECONDITION, 400, -32008, "EXTENSION_SUPPORT_REQUIRED", 2
    ),
    VersionNotSupportedError: Status(grpc.StatusCode.UNIMPLEMENTED, 400, -32009, "VERSION_NOT_SUPPORTED", 2),
    InvalidParamsError: Status(grpc.StatusCode.INVALID_ARGUMENT, 400, -32602, "INVALID_PARAMS", 2),
    InvalidRequestError: Status(grpc.StatusCode.INVALID_ARGUMENT, 400, -32600, "INVALID_REQUEST", 2),
    JSONParseError: Status(grpc.StatusCode.INVALID_ARGUMENT, 400, -32700, "INVALID_REQUEST", 2),
    MethodNotFoundError: Status(grpc.StatusCode.UNIMPLEMENTED, 404, -32601, "METHOD_NOT_FOUND", 2),
    InternalError: Status(grpc.StatusCode.INTERNAL, 500, -32603, "INTERNAL_ERROR", 1),
}

AGENTHUB_ERRORS = [cls for cls in STATUS if issubclass(cls, AgentHubError)]

# What a client sees of a failure the hub did not expect: the details stay in the hub's log.
INTERNAL_MESSAGE = "internal error in the hub; it has been logged (reference {reference})"


def status_of(error: BaseException) -> Status:
    """The transport codes for an error: its own class's, else its nearest mapped ancestor's."""
    for cls in type(error).__mro__:
        if cls in STATUS:
            return STATUS[cls]
    return STATUS[AgentHubError]


_BY_GRPC_CODE: dict[grpc.StatusCode, type[AgentHubError]] = {
    grpc.StatusCode.INVALID_ARGUMENT: InvalidRequest,
    grpc.StatusCode.NOT_FOUND: AgentNotFound,
    grpc.StatusCode.UNAVAILABLE: HubUnavailable,
    grpc.StatusCode.FAILED_PRECONDITION: ConfigError,
    grpc.StatusCode.UNIMPLEMENTED: InvalidRequest,  # an operation or A2A version the server refuses
    grpc.StatusCode.UNAUTHENTICATED: Unauthenticated,
    grpc.StatusCode.PERMISSION_DENIED: PermissionDenied,
    grpc.StatusCode.RESOURCE_EXHAUSTED: RateLimited,
}


_BY_REASON: dict[str, type[AgentHubError]] = {STATUS[cls].reason: cls for cls in AGENTHUB_ERRORS}


def from_grpc(error: grpc.RpcError) -> AgentHubError:
    """Turn a failed gRPC call into the matching AgentHub error, keeping the server's message.

    The class follows the status code; the reason the hub names (its ErrorInfo) narrows it to a
    subclass of that class (STORE_UNAVAILABLE: `StoreUnavailable`, still a `HubUnavailable`)."""
    code = error.code() if hasattr(error, "code") else grpc.StatusCode.UNKNOWN
    details = error.details() if hasattr(error, "details") else str(error)
    cls = _BY_GRPC_CODE.get(code, AgentHubError)
    named = _BY_REASON.get(_reason_of(error), cls)
    cls = named if issubclass(named, cls) else cls
    if (
        code == grpc.StatusCode.UNAVAILABLE
        and "failed to connect to all addresses" in (details or "").lower()
    ):
        details = (
            f"cannot reach the hub ({details.split(':')[-1].strip() or 'connection failed'}); is it running?"
        )
    return cls(details or code.name)


def _reason_of(error: grpc.RpcError) -> str:
    """The ErrorInfo reason in a failed call's rich status (trailing metadata), or ""."""
    metadata = error.trailing_metadata() if hasattr(error, "trailing_metadata") else None
    for key, value in metadata or ():
        if key == "grpc-status-details-bin" and isinstance(value, bytes):
            with contextlib.suppress(DecodeError):
                for detail in status_pb2.Status.FromString(value).details:
                    info = error_details_pb2.ErrorInfo()
                    if detail.Unpack(info):
                        return info.reason
    return ""
