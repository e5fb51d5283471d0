from a2a.types import TaskState

from agenthub.sdk import Agent, HubClient, ScriptedModel, tool


@tool
def shout(text: str) -> str:
    """Upper-case the text."""
    return text.upper()


async def test_send_through_hub(hub):
    async with (
        Agent("echo", tools=[shout], model=ScriptedModel(), hub=hub.address),
        HubClient(hub.address) as client,
    ):
        task = await client.send("echo", "hello")
        assert task.status.state == TaskState.TASK_STATE_COMPLETED
        assert task.status.message.parts[0].text == "HELLO"
        thread = await client.get_thread(task.context_id)
        hops = [(m.sender, m.recipient, m.text) for m in thread.messages]
        assert hops[0] == ("user", "echo", "hello")
        assert hops[-1] == ("echo", "user", "HELLO")
        tool_call = next(m for m in thread.messages if "tool_call" in m.message_json)
        assert '"name": "shout"' in tool_call.message_json
