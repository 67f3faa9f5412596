"""The backend token never shows in reprs, logs, errors or pickled metadata."""

from __future__ import annotations

import io
import json
import pickle

import structlog

from synapse_ray import BackendSpec, RuntimeContext
from synapse_ray.runtime.logging import MASK, configure_logging, redact_processor, register_secret

TOKEN = "tok-9f8e7d6c5b4a"


def spec() -> BackendSpec:
    return BackendSpec(base_url="http://127.0.0.1:9/", token=TOKEN)


def test_runtime_context_repr_and_spec_repr_hide_the_token():
    rt = RuntimeContext(backend=spec())
    assert TOKEN not in repr(rt) and TOKEN not in repr(rt.backend) and TOKEN not in str(rt.backend)


def test_token_survives_pickling_only_inside_the_spec_value():
    rt = RuntimeContext(backend=spec())
    copy = pickle.loads(pickle.dumps(rt))
    assert copy.backend.token.get_secret_value() == TOKEN
    assert TOKEN not in repr(copy)


def test_redaction_processor_masks_keys_values_and_free_text():
    register_secret(TOKEN)
    event = redact_processor(
        None,
        "info",
        {
            "event": f"calling with {TOKEN}",
            "token": "anything",
            "headers": {"Synapse-Access-Token": f"Token {TOKEN}"},
            "args": [TOKEN],
        },
    )
    assert TOKEN not in json.dumps(event)
    assert event["token"] == MASK and event["headers"]["Synapse-Access-Token"] == MASK


def test_log_lines_of_a_context_never_show_the_token(monkeypatch):
    buf = io.StringIO()
    monkeypatch.setattr("sys.stderr", buf)
    configure_logging(json=True, force=True)
    try:
        rt = RuntimeContext(backend=spec())
        rt.logger.info("connecting", url=rt.backend.base_url, detail=f"Token {TOKEN}", spec=rt.backend)
        out = buf.getvalue()
    finally:
        structlog.reset_defaults()
        configure_logging(force=True)
    assert "connecting" in out and TOKEN not in out


def test_action_log_entries_kept_for_handle_logs_are_redacted():
    from synapse_ray import LocalExecutor
    from tests.core.actions import AddAction

    class Chatty(AddAction):
        def execute(self):
            self.log("calling", {"url": "http://x/", "auth": f"Token {TOKEN}", "api_key": "k-123456"})
            return 1

    register_secret(TOKEN)
    handle = LocalExecutor().submit(Chatty, {"a": 1})
    assert handle.result(timeout=10) == 1
    entries = handle.logs()
    assert entries and TOKEN not in json.dumps(entries) and "k-123456" not in json.dumps(entries)
    assert entries[0]["data"]["url"] == "http://x/"
