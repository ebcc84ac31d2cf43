"""Structured JSON logs (``log_format = "json"``): one object per line on stderr.

Only whitelisted ``extra`` fields are emitted, so a careless ``extra={"token": ...}`` cannot leak;
access lines carry the route template, never the concrete path (queue ids stay out).
"""

from __future__ import annotations

import json
import logging
import time

from ..config import Config
from .redaction import install_redaction

SAFE_FIELDS = ("method", "route", "status", "duration_ms", "event", "count")
_HANDLED = ("", "uvicorn", "uvicorn.error", "roost")


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, object] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key in SAFE_FIELDS:
            if key in record.__dict__:
                out[key] = record.__dict__[key]
        if record.exc_info:
            # exc_text: the traceback as the redaction filter left it (redaction.py)
            out["exc"] = record.exc_text or self.formatException(record.exc_info)
        return json.dumps(out, ensure_ascii=False, default=str)


def configure_logging(config: Config) -> None:
    """Called at app start-up, after uvicorn installed its own handlers: switch the process's
    log output to JSON lines if configured (text keeps uvicorn's handlers), then put the
    redaction filter on every handler, whatever the format and level."""
    if config.log_format == "json":
        _use_json(config)
    install_redaction()


def _use_json(config: Config) -> None:
    formatter = JsonFormatter()
    handler = logging.StreamHandler()
    handler.setFormatter(formatter)
    level = getattr(logging, config.log_level.upper(), logging.INFO)
    for name in _HANDLED:
        logger = logging.getLogger(name)
        for h in list(logger.handlers):
            logger.removeHandler(h)
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(level)
    for name in ("uvicorn", "uvicorn.error", "roost"):
        logging.getLogger(name).propagate = True
    # uvicorn's access lines carry the concrete path; MetricsMiddleware logs the route template.
    access = logging.getLogger("uvicorn.access")
    access.handlers.clear()
    access.propagate = False
    access.disabled = True
    logging.getLogger("roost.access").setLevel(level)
    # alembic announces its context at info on every schema check: noise, not events
    logging.getLogger("alembic").setLevel(max(level, logging.WARNING))
