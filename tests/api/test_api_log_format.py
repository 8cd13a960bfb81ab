"""LOG_FORMAT: JSON lines where a log pipeline reads them, short text lines on a terminal."""

from __future__ import annotations

import json
import logging
import os
import tempfile

import pytest

from api.requestlog import JsonFormatter, TextFormatter, log_formatter


def request_record() -> logging.LogRecord:
    record = logging.LogRecord("api.request", logging.INFO, __file__, 1, "%s %s %s", None, None)
    record.args = ("POST", "/orders", 201)
    record.fields = {  # type: ignore[attr-defined]
        "request_id": "abc123",
        "method": "POST",
        "path": "/orders",
        "status": 201,
        "duration_ms": 12.5,
    }
    record.emf = {"_aws": {"CloudWatchMetrics": []}, "Requests": 1}  # type: ignore[attr-defined]
    return record


def test_auto_is_text_on_a_terminal():
    leader, follower = os.openpty()
    try:
        with os.fdopen(follower, "w") as terminal:
            assert isinstance(log_formatter("auto", terminal), TextFormatter)
            assert isinstance(log_formatter("", terminal), TextFormatter)
    finally:
        os.close(leader)


def test_auto_is_json_elsewhere_and_either_can_be_forced():
    with tempfile.TemporaryFile("w") as not_a_terminal:
        assert isinstance(log_formatter("auto", not_a_terminal), JsonFormatter)
        assert isinstance(log_formatter("TEXT", not_a_terminal), TextFormatter)
    leader, follower = os.openpty()
    try:
        with os.fdopen(follower, "w") as terminal:
            assert isinstance(log_formatter("json", terminal), JsonFormatter)
    finally:
        os.close(leader)


def test_a_text_line_is_short_and_keeps_the_request_id():
    line = TextFormatter().format(request_record())
    assert line.endswith("INFO    POST /orders 201 12.5 ms request_id=abc123")
    assert "_aws" not in line
    assert len(line) < 80


def test_the_json_line_is_unchanged():
    entry = json.loads(JsonFormatter().format(request_record()))
    assert entry["message"] == "POST /orders 201"
    assert entry["status"] == 201
    assert entry["Requests"] == 1


def test_an_unknown_format_is_named():
    with pytest.raises(ValueError, match="LOG_FORMAT must be one of auto, json, text; got 'xml'"):
        log_formatter("xml", None)
