"""The SDK reads a hub error back into the class the hub raised, as far as the status code allows:
the class follows the gRPC code, and the reason the hub names (its ErrorInfo) narrows it to a
subclass of that class, so `except HubUnavailable` still catches a thread store outage while
`except StoreUnavailable` catches only that. Unit tests of the mapping logic; the real round trip
through a hub is in test_mutants_recorder.py (a read of what is not recorded yet)."""

from __future__ import annotations

import grpc
import pytest
from a2a.utils.errors import A2AError, TaskNotFoundError

from agenthub.hub.heads.guard import rich_status
from agenthub.sdk import errors
from agenthub.sdk.errors import (
    AGENTHUB_ERRORS,
    AgentNotFound,
    HubUnavailable,
    LogUnavailable,
    StoreUnavailable,
    ThreadNotFound,
    from_grpc,
)


class Failed(grpc.RpcError):
    """A failed call as grpc.aio raises it: code, details and trailing metadata."""

    def __init__(self, error: A2AError, with_reason: bool = True) -> None:
        self._status = rich_status(error)
        self._with_reason = with_reason

    def code(self) -> grpc.StatusCode:
        return self._status.code

    def details(self) -> str:
        return self._status.details

    def trailing_metadata(self) -> tuple[tuple[str, bytes], ...]:
        return tuple(self._status.trailing_metadata) if self._with_reason else ()


@pytest.mark.parametrize("cls", AGENTHUB_ERRORS, ids=lambda cls: cls.__name__)
def test_each_error_comes_back_as_its_class_or_the_class_of_its_code(cls: type[errors.AgentHubError]) -> None:
    by_code = from_grpc(Failed(cls("why"), with_reason=False))
    back = from_grpc(Failed(cls("why")))
    assert back.message == by_code.message == "why"
    assert type(back) is (cls if issubclass(cls, type(by_code)) else type(by_code))


def test_store_and_log_outages_are_still_hub_unavailable() -> None:
    for cls in (StoreUnavailable, LogUnavailable):
        back = from_grpc(Failed(cls("retry shortly")))
        assert type(back) is cls and isinstance(back, HubUnavailable)


def test_a_reason_outside_the_codes_class_does_not_change_it() -> None:
    """THREAD_NOT_FOUND is NOT_FOUND, read as AgentNotFound (the client's thread calls turn it into
    ThreadNotFound); A2A's own TASK_NOT_FOUND has no AgentHub class and stays by its code."""
    assert type(from_grpc(Failed(ThreadNotFound("no thread")))) is AgentNotFound
    assert type(from_grpc(Failed(TaskNotFoundError("no task")))) is AgentNotFound
