"""A plain a2a-sdk agent (no AgentHub code) that answers the usual A2A way: with artifacts, and no
reply message. The first word of the request picks the shape of the answer:

- `text WORDS`: one text artifact "answer: WORDS";
- `chunks WORDS`: the same artifact streamed as three chunks (`append`, `last_chunk`);
- `data WORDS`: an artifact with one data part {"answer": WORDS, "ok": true};
- `file N`: an artifact with one binary file part of N bytes (b"x" * N), plus a URL file part;
- `reply WORDS`: no task and no artifact at all, a Message "answer: WORDS" (A2A's direct reply).
"""

from __future__ import annotations

import contextlib

from a2a.helpers.proto_helpers import new_task_from_user_message, new_text_message
from a2a.server.agent_execution import AgentExecutor, RequestContext
from a2a.server.events import EventQueue
from a2a.server.tasks import TaskUpdater
from a2a.types import Part, Role
from google.protobuf.json_format import ParseDict
from google.protobuf.struct_pb2 import Value

from tests.plain_agent import serve_plain_agent

FILE_URL = "https://example.invalid/report.pdf"


def expected_text(request: str) -> str:
    """What the thread, GetTask and the chat export must hold as the answer to `request`."""
    shape, _, rest = request.partition(" ")
    if shape == "data":
        return '{"answer":"' + rest + '","ok":true}'
    if shape == "file":
        return f"[file blob.bin, application/octet-stream: {rest} bytes]\n[file report.pdf: {FILE_URL}]"
    return f"answer: {rest}"


class ArtifactsOnly(AgentExecutor):
    """Works, answers with an artifact, completes without a message."""

    async def execute(self, context: RequestContext, event_queue: EventQueue) -> None:
        assert context.message is not None
        shape, _, rest = context.get_user_input().partition(" ")
        if shape == "reply":
            reply = new_text_message(f"answer: {rest}", context_id=context.context_id, role=Role.ROLE_AGENT)
            await event_queue.enqueue_event(reply)
            return
        task = context.current_task or new_task_from_user_message(context.message)
        if context.current_task is None:
            await event_queue.enqueue_event(task)
        updater = TaskUpdater(event_queue, task.id, task.context_id)
        await updater.start_work()
        if shape == "chunks":
            pieces = ["answer", ": ", rest]
            for n, piece in enumerate(pieces):
                await updater.add_artifact(
                    [Part(text=piece)], artifact_id="streamed", name="answer",
                    append=n > 0, last_chunk=n == len(pieces) - 1,
                )  # fmt: skip
        elif shape == "data":
            data = ParseDict({"answer": rest, "ok": True}, Value())
            await updater.add_artifact([Part(data=data)], name="result")
        elif shape == "file":
            raw = Part(raw=b"x" * int(rest), filename="blob.bin", media_type="application/octet-stream")
            await updater.add_artifact([raw, Part(url=FILE_URL, filename="report.pdf")], name="files")
        else:
            await updater.add_artifact([Part(text=f"answer: {rest}")], name="answer")
        await updater.complete()

    async def cancel(self, context: RequestContext, event_queue: EventQueue) -> None:
        await TaskUpdater(event_queue, context.task_id or "", context.context_id or "").cancel()


def serve_artifact_agent() -> contextlib.AbstractAsyncContextManager[str]:
    """Serve the agent (card, JSON-RPC, HTTP+JSON) on a free loopback port; yields its base URL."""
    return serve_plain_agent(("JSONRPC", "HTTP+JSON"), ArtifactsOnly(), name="artifacts")
