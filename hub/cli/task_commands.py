"""`agenthub tasks`: A2A tasks from the command line: list them, show one, cancel one."""

from __future__ import annotations

from typing import Annotated

import typer
from a2a.types import Task, TaskState

from agenthub.hub.cli import render
from agenthub.hub.cli.common import DEFAULT_HUB, HubOpt, JsonOpt, run

tasks_app = typer.Typer(help="A2A tasks: list, show, cancel.", no_args_is_help=True)
AgentOpt = Annotated[str, typer.Option(help="the agent serving the task (default: whichever does)")]


def attach(app: typer.Typer) -> None:
    """Add `agenthub tasks` to the `agenthub` app."""
    app.add_typer(tasks_app, name="tasks")


@tasks_app.command("list")
def tasks_list(
    agent: Annotated[str, typer.Option(help="only this agent's tasks")] = "",
    thread: Annotated[str, typer.Option("--thread", help="only the tasks of this thread (context id)")] = "",
    state: Annotated[str, typer.Option(help="only tasks in this state (e.g. working, failed)")] = "",
    limit: Annotated[int, typer.Option(min=1, max=100, help="how many")] = 20,
    page: Annotated[str, typer.Option(help="page token from a previous listing")] = "",
    hub: HubOpt = DEFAULT_HUB,
    json: JsonOpt = False,
) -> None:
    """List tasks, most recent first, filtered by agent, thread and state."""
    from agenthub.sdk import HubClient

    async def main() -> None:
        wanted = TaskState.Value(render.task_state(state)) if state else TaskState.TASK_STATE_UNSPECIFIED
        async with HubClient(hub) as client:
            reply = await client.list_tasks(
                agent, context_id=thread, state=wanted, page_size=limit, page_token=page
            )
        shown = render.tasks_table(list(reply.tasks)) if reply.tasks else None
        render.print_page(reply, shown, json=json, noun="tasks", filtered=bool(agent or thread or state))

    run(main())


@tasks_app.command("show")
def tasks_show(task_id: str, agent: AgentOpt = "", hub: HubOpt = DEFAULT_HUB, json: JsonOpt = False) -> None:
    """Show a task: its state, thread, last message and artifacts."""
    from agenthub.sdk import HubClient

    async def main() -> Task:
        async with HubClient(hub) as client:
            return await client.get_task(agent, task_id)

    _print(run(main()), json=json)


@tasks_app.command("cancel")
def tasks_cancel(
    task_id: str, agent: AgentOpt = "", hub: HubOpt = DEFAULT_HUB, json: JsonOpt = False
) -> None:
    """Cancel a task that has not ended (one still queued is never delivered)."""
    from agenthub.sdk import HubClient

    async def main() -> Task:
        async with HubClient(hub) as client:
            return await client.cancel_task(agent, task_id)

    _print(run(main()), json=json)


def _print(task: Task, *, json: bool) -> None:
    if json:
        render.print_json(render.as_json(task))
    else:
        render.console.print("\n".join(render.task_lines(task)), markup=False)
