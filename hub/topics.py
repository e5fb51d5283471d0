"""Topic and consumer-group names, all under one configurable prefix (DESIGN.md)."""

from __future__ import annotations

import re
from dataclasses import dataclass


@dataclass(frozen=True)
class Topics:
    """Names of every topic and group the hub uses."""

    prefix: str = "agenthub"

    def inbox(self, agent: str) -> str:
        return f"{self.prefix}.inbox.{agent}"

    def dlq(self, agent: str) -> str:
        return f"{self.prefix}.dlq.{agent}"

    def replies(self, instance: str) -> str:
        return f"{self.prefix}.replies.{instance}"

    @property
    def registry(self) -> str:
        return f"{self.prefix}.registry"

    @property
    def control(self) -> str:
        return f"{self.prefix}.control"

    @property
    def push(self) -> str:
        """Compacted topic of push-notification configs."""
        return f"{self.prefix}.push"

    @property
    def push_attempts(self) -> str:
        """Every webhook POST the hub tried, with its outcome."""
        return f"{self.prefix}.push-attempts"

    @property
    def notifier_group(self) -> str:
        return f"{self.prefix}.notifier"

    @property
    def replies_pattern(self) -> str:
        """Regex matching every instance's reply topic (where task updates travel)."""
        return rf"{re.escape(self.prefix)}\.replies\..+"

    @property
    def parked(self) -> str:
        """Records the recorder could never project, with the reason in their headers."""
        return f"{self.prefix}.parked"

    @property
    def audit(self) -> str:
        """Authentication failures, denials and administrative actions (hub/trust/audit.py)."""
        return f"{self.prefix}.audit"

    @property
    def keys(self) -> str:
        """Compacted topic of API keys (hashes only)."""
        return f"{self.prefix}.keys"

    @property
    def policy(self) -> str:
        """Compacted topic of the rules of who may call which agent."""
        return f"{self.prefix}.policy"

    @property
    def dispatch_group(self) -> str:
        """The group whose members (hub instances) share every agent's inbox."""
        return f"{self.prefix}.dispatch"

    @property
    def inbox_pattern(self) -> str:
        """Regex matching every agent's inbox topic."""
        return rf"{re.escape(self.prefix)}\.inbox\..+"

    def agent_of_inbox(self, topic: str) -> str:
        """The agent whose inbox `topic` is."""
        return topic.removeprefix(f"{self.prefix}.inbox.")

    def recorder_group(self, store_id: str) -> str:
        """One group per thread store: every store gets every record, hub instances sharing a
        store (PostgreSQL) share the work, and each private store (SQLite) reads everything."""
        return f"{self.prefix}.recorder.{store_id}"

    @property
    def routing_pattern(self) -> str:
        """Regex matching every topic the recorder projects into threads."""
        prefix = self.prefix.replace(".", r"\.")
        return rf"{prefix}\.(inbox|replies|dlq)\..+"

    def is_routing(self, topic: str) -> bool:
        """Whether a topic carries envelopes (inbox, replies or dead letters) under this prefix."""
        return re.fullmatch(self.routing_pattern, topic) is not None
