"""Logs carry the request id and never secrets, locals or URL passwords."""

from __future__ import annotations

import json
import logging

import structlog

from aiaas.logging import configure_logging, redact_text


def test_json_logs_redact_secrets_and_skip_locals(capsys):
    configure_logging(fmt="json", level="INFO")
    try:
        log = structlog.get_logger("test")
        log.info(
            "connect",
            url="postgresql://user:hunter2@db/x",
            api_key="aiaas_topsecret",
            header="Bearer eyJhbGciOi.secret.part",
            nested={"password": "pw-canary", "ok": 1},
        )
        try:
            local_secret = "local-canary-value"  # noqa: F841
            raise RuntimeError("boom")
        except RuntimeError:
            log.exception("failed")
        err = capsys.readouterr().err
        lines = [json.loads(line) for line in err.strip().splitlines()]
        assert lines[0]["event"] == "connect"
        for canary in (
            "hunter2",
            "aiaas_topsecret",
            "eyJhbGciOi",
            "pw-canary",
            "local-canary-value",
        ):
            assert canary not in err, canary
        assert "RuntimeError: boom" in lines[1]["exception"]
    finally:
        structlog.reset_defaults()
        logging.getLogger().handlers = [
            h for h in logging.getLogger().handlers if h.get_name() != "aiaas"
        ]


def test_redact_text():
    assert redact_text("mysql://root:pw@h/db") == "mysql://root:[redacted]@h/db"
    assert redact_text("Authorization: Bearer abc.def") == "Authorization: Bearer [redacted]"
