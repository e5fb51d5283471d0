"""Webhook URLs: which can never work (refused when a config is created, given up at once when
one is found in the config topic), and how logs and attempt records show them (no credentials)."""

from __future__ import annotations

import pytest

from agenthub.hub.push.webhooks import shown, url_problem


@pytest.mark.parametrize(
    ("url", "seen"),
    [
        ("http://user:s3cret@hooks.example:8443/p/q?token=s3cret#frag", "http://hooks.example:8443/p/q"),
        ("https://hooks.example/hook", "https://hooks.example/hook"),
        ("http://[::1]:9000/x?sig=abc", "http://[::1]:9000/x"),
    ],
)
def test_webhook_urls_are_shown_without_credentials(url: str, seen: str) -> None:
    assert shown(url) == seen
    assert url_problem(url) is None


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("http://[::1", "is not a valid URL"),
        ("ftp://nowhere", "must use http:// or https://"),
        ("http://", "names no host"),
        ("http:///path", "names no host"),
        ("http://h:99999/x", "is not a valid URL"),
        ("http://h:0/x", "names port 0"),
        (" http://x/", "without spaces"),
        ("http://a b/", "without spaces"),
        ("", "without spaces"),
    ],
)
def test_urls_that_can_never_work(url: str, problem: str) -> None:
    found = url_problem(url)
    assert found is not None and problem in found
    assert "Error" not in found  # no exception class names reach a client
