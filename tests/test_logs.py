"""No secret in any log line: a process configured with `configure_logging` (console and JSON) logs
credential-like fields, a failure whose frames hold credentials in their locals, and a standard-
library error carrying a bearer token; its real stderr shows none of them, and still shows what an
operator needs (the event, harmless fields, the traceback's frames and message). With JSON, every
line is JSON, libraries' lines too. A hub on a broker that refuses idempotent producers says so in
one warning, without aiokafka's alarming ERROR line."""

from __future__ import annotations

import json
import logging
import subprocess
import sys

import pytest

from agenthub.hub.log.kafka import KafkaLog
from agenthub.sdk.logs import is_secret_key, redact_text

SCRIPT = """
import logging, sys
import structlog
from agenthub.sdk.logs import configure_logging

configure_logging(json=sys.argv[1] == "json")
log = structlog.get_logger("test")
log.warning("push sent", authorization="Bearer s3cret-a", token="s3cret-b", prompt_tokens=12,
            headers={"Authorization": "Bearer s3cret-c", "X-A2A-Notification-Token": "s3cret-d",
                     "Accept": "text/plain"},
            webhook="http://user:s3cret-e@hooks.example/p?token=s3cret-f&page=2",
            note="sent with Bearer s3cret-g")

def call_webhook(credentials):
    api_key = "s3cret-h"
    password = "s3cret-i"
    raise RuntimeError("refused: Authorization: Bearer s3cret-j")

try:
    call_webhook("s3cret-k")
except RuntimeError:
    log.exception("webhook failed", client_secret="s3cret-l")
logging.getLogger("somelib").error("retrying with Authorization: Bearer s3cret-m")
"""


@pytest.fixture(params=["console", "json"])
def output(request: pytest.FixtureRequest) -> str:
    """What a configured process really wrote to stderr."""
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT, request.param], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    return done.stderr


def test_no_secret_reaches_the_log(output: str) -> None:
    assert "s3cret" not in output, output
    assert "[redacted]" in output


def test_what_operators_need_stays(output: str) -> None:
    for kept in ["push sent", "prompt_tokens", "12", "text/plain", "hooks.example/p", "page=2",
                 "webhook failed", "Traceback", "call_webhook", "RuntimeError: refused",
                 "somelib", "retrying with Authorization: Bearer"]:  # fmt: skip
        assert kept in output, (kept, output)


def test_json_lines_stay_json() -> None:
    done = subprocess.run([sys.executable, "-c", SCRIPT, "json"], capture_output=True, text=True, timeout=60)
    events = [json.loads(line) for line in done.stderr.splitlines()]
    first, failure, library = events
    assert first["token"] == "[redacted]" and first["prompt_tokens"] == 12
    assert first["headers"] == {
        "Authorization": "[redacted]",
        "X-A2A-Notification-Token": "[redacted]",
        "Accept": "text/plain",
    }
    assert first["webhook"] == "http://user:[redacted]@hooks.example/p?token=[redacted]&page=2"
    assert failure["exception"].startswith("Traceback") and "api_key" not in failure["exception"]
    assert library == library | {"logger": "somelib", "level": "error"}
    assert library["event"] == "retrying with Authorization: Bearer [redacted]"


async def test_a_broker_refusing_idempotence_gets_one_warning_not_an_error(
    kafka_bootstrap: str, caplog: pytest.LogCaptureFixture
) -> None:
    log = KafkaLog(kafka_bootstrap, idempotence="auto")
    with caplog.at_level(logging.INFO):
        async with log:
            await log.produce("t-idempotence", b"v", key=b"k")
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], caplog.text


@pytest.mark.parametrize(
    ("key", "secret"),
    [("authorization", True), ("X-A2A-Notification-Token", True), ("api_key", True), ("apiKey", True),
     ("OPENAI_API_KEY", True), ("client_secret", True), ("db_password", True), ("credentials", True),
     ("prompt_tokens", False), ("task", False), ("keyboard", False), ("url", False)],
)  # fmt: skip
def test_secret_keys(key: str, secret: bool) -> None:
    assert is_secret_key(key) is secret


def test_redact_text_keeps_what_is_not_a_credential() -> None:
    assert redact_text("GET /a?page=2&api_key=abc&sort=up") == "GET /a?page=2&api_key=[redacted]&sort=up"
    assert redact_text("Authorization: Basic dXNlcjpwYXNz") == "Authorization: Basic [redacted]"
    assert redact_text("http://host:8080/path") == "http://host:8080/path"
    prose = "max_tokens=512, keyboard: us, tokens: 12"
    assert redact_text(prose) == prose


@pytest.mark.parametrize(
    ("text", "redacted"),
    [("login failed with token=abc123 for bob", "login failed with token=[redacted] for bob"),
     ("connect(password='hunter2', user='u')", "connect(password='[redacted]', user='u')"),
     ('{"api_key": "sk-123", "model": "m"}', '{"api_key": "[redacted]", "model": "m"}'),
     ("Secret: s3cr3t; retrying", "Secret: [redacted]; retrying"),
     ("GET /x?access_token=t1&page=2", "GET /x?access_token=[redacted]&page=2")],
)  # fmt: skip
def test_redact_text_hides_named_credentials_in_prose(text: str, redacted: str) -> None:
    assert redact_text(text) == redacted
