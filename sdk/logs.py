"""Structured logging setup shared by hub and agent processes (structlog; JSON when asked).

What it must never do: print a secret. Exceptions are rendered as plain tracebacks, never with
frame locals (rich's and better-exceptions' default shows every local, so a token in scope would
be printed), and every log line, structlog's and the standard library's, passes a redaction step
that hides credential-like fields (authorization, token, password, secret, API key, cookie...),
bearer/basic credentials, and passwords or tokens inside URLs.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Mapping, MutableMapping
from typing import Any

import structlog

REDACTED = "[redacted]"
SECRET_WORDS = {"authorization", "token", "credential", "credentials", "password", "passwd", "secret",
                "apikey", "cookie", "jwt"}  # fmt: skip
_SCHEME_CREDENTIALS = re.compile(r"\b(Bearer|Basic|Token|Digest)\s+[^\s,;'\"]+", re.IGNORECASE)
_URL_PASSWORD = re.compile(r"(://[^/\s:@]+:)[^/\s@]+@")
_QUERY_SECRET = re.compile(
    r"([?&;](?:access_?token|token|api_?key|apikey|password|secret|key|sig|signature)=)[^&#\s'\"]+",
    re.IGNORECASE,
)
# `token=…` or `password: …` in prose (an exception's message, a library's log line); not
# `max_tokens=` nor `keyboard:`, where the word is part of a longer one
_NAMED_SECRET = re.compile(
    r"""((?<![\w-])(?:access_?token|refresh_?token|token|api_?key|apikey|password|passwd|secret|client_?secret)"""
    r"""['"]?\s*[=:]\s*['"]?)(?!\[redacted\])[^\s&#'",;)}\]]+""",
    re.IGNORECASE,
)


def is_secret_key(key: str) -> bool:
    """Whether a field named `key` holds a credential: one of its words (split on anything not a
    letter or digit) is a secret word, or it says "api key" (`prompt_tokens` is not a secret)."""
    words = [word for word in re.split(r"[^a-z0-9]+", key.lower()) if word]
    joined = "".join(words)
    return any(word in SECRET_WORDS for word in words) or "apikey" in joined


def redact_text(text: str) -> str:
    """`text` with credentials it carries hidden: `Bearer …`, `user:password@` in URLs,
    token-like query parameters, and `token=…` or `password: …` anywhere."""
    text = _SCHEME_CREDENTIALS.sub(lambda m: f"{m.group(1)} {REDACTED}", text)
    text = _URL_PASSWORD.sub(rf"\1{REDACTED}@", text)
    text = _QUERY_SECRET.sub(rf"\1{REDACTED}", text)
    return _NAMED_SECRET.sub(rf"\1{REDACTED}", text)


def redact(value: Any) -> Any:
    """A copy of `value` with credentials hidden, through dicts, lists and tuples."""
    if isinstance(value, str):
        return redact_text(value)
    if isinstance(value, Mapping):
        return {key: _field(key, item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(redact(item) for item in value)
    return value


def _field(key: object, value: Any) -> Any:
    return REDACTED if isinstance(key, str) and is_secret_key(key) else redact(value)


def redact_secrets(
    logger: object, method: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """structlog processor: every field of every event, redacted (runs after the exception is
    formatted, so the traceback text is redacted too)."""
    return {key: _field(key, value) for key, value in event_dict.items()}


class ClientMistakesInOneLine(logging.Filter):
    """a2a-sdk logs a request whose params do not parse with a whole traceback: that is the caller's
    mistake, already answered with its error code, so it becomes one warning line saying why."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and record.getMessage() == "Failed to parse request params":
            error = record.exc_info[1]
            record.msg, record.args = f"a request's params did not parse: {error}", ()
            record.levelno, record.levelname = logging.WARNING, "WARNING"
            record.exc_info = record.exc_text = None
        return True


def configure_logging(*, json: bool = False, level: str = "INFO") -> None:
    """Route structlog and stdlib logging (libraries: aiokafka, grpc, a2a-sdk...) to stderr, as
    console lines or JSON lines, one format for both, redacted."""
    renderer: structlog.types.Processor = (
        structlog.processors.JSONRenderer()
        if json
        else structlog.dev.ConsoleRenderer(colors=False, exception_formatter=structlog.dev.plain_traceback)
    )
    stamped: list[structlog.types.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso"),
    ]
    rendered: list[structlog.types.Processor] = [
        structlog.processors.format_exc_info,  # a plain traceback: no frame locals
        redact_secrets,
        renderer,
    ]
    structlog.configure(
        processors=[*stamped, *rendered],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level.upper())),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=True,
    )
    root = logging.getLogger()
    before = set(root.handlers)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    library_lines = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[*stamped, structlog.stdlib.add_logger_name],
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, *rendered],
    )
    for handler in set(root.handlers) - before:  # ours only; a host app's handlers stay its own
        handler.setFormatter(library_lines)
    dispatcher = logging.getLogger("a2a.server.routes.jsonrpc_dispatcher")
    if not any(isinstance(f, ClientMistakesInOneLine) for f in dispatcher.filters):
        dispatcher.addFilter(ClientMistakesInOneLine())
