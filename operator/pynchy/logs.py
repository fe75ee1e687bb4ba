"""structlog set-up for the whole package: JSON in clusters and pipes, readable on a terminal."""

from __future__ import annotations

import logging
import os
import sys
from typing import Literal

import structlog

LogFormat = Literal["json", "console"]
_configured = False


def choose_format(explicit: str | None = None, *, stream_is_tty: bool | None = None) -> LogFormat:
    """JSON unless a person is watching: PYNCHY_LOG_FORMAT wins, then whether stderr is a TTY."""
    value = (explicit or os.environ.get("PYNCHY_LOG_FORMAT") or "").strip().lower()
    if value == "json":
        return "json"
    if value == "console":
        return "console"
    if value:
        raise ValueError(f"PYNCHY_LOG_FORMAT must be 'json' or 'console', not {value!r}")
    tty = sys.stderr.isatty() if stream_is_tty is None else stream_is_tty
    return "console" if tty else "json"


def configure_logging(level: str | None = None, fmt: str | None = None) -> LogFormat:
    """Configure structlog and route stdlib logging (kopf, kubernetes, sqlalchemy) through it."""
    global _configured
    chosen = choose_format(fmt)
    level_name = (level or os.environ.get("PYNCHY_LOG_LEVEL") or "INFO").upper()
    numeric = logging.getLevelName(level_name)
    if not isinstance(numeric, int):
        raise ValueError(f"PYNCHY_LOG_LEVEL must be DEBUG, INFO, WARNING or ERROR, not {level_name!r}")

    shared: list[structlog.types.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.StackInfoRenderer(),
    ]
    renderer: structlog.types.Processor
    if chosen == "json":
        shared.append(structlog.processors.format_exc_info)
        renderer = structlog.processors.JSONRenderer()
    else:
        renderer = structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())

    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=shared,
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(numeric)
    # Third-party chatter that drowns the useful lines at INFO.
    for noisy in ("urllib3", "kubernetes.client.rest", "asyncio"):
        logging.getLogger(noisy).setLevel(max(numeric, logging.WARNING))
    _configured = True
    return chosen


def get_logger(name: str | None = None) -> structlog.stdlib.BoundLogger:
    return structlog.stdlib.get_logger(name)
