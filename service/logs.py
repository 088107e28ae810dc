"""structlog configured once, for every process the `mip-gateway` command starts.

Library code (``dicom_io``) logs through the standard library; it is rendered by the same
processors, so one format covers both. Never bind patient names or IDs: UIDs only.
"""

from __future__ import annotations

import logging
import sys

import structlog

__all__ = ["configure_logging"]


def configure_logging(*, json: bool = False, level: int = logging.INFO) -> None:
    shared: list[structlog.types.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    renderer: structlog.types.Processor = (
        structlog.processors.JSONRenderer() if json else structlog.dev.ConsoleRenderer(colors=False)
    )
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.make_filtering_bound_logger(level),
        cache_logger_on_first_use=True,
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=shared,
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
        )
    )
    handler.addFilter(_quiet_pydicom)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)


def _quiet_pydicom(record: logging.LogRecord) -> bool:
    # pydicom logs every oddity it reads past, and decoder failures with tracebacks; dicom_io turns
    # what matters into errors that name the instance. (A filter, because importing pydicom resets
    # its logger's level, and commands import it after logging is configured.)
    if record.name.startswith("pydicom"):
        return record.levelno >= logging.CRITICAL
    # highdicom narrates every module it copies at INFO
    return not record.name.startswith("highdicom") or record.levelno >= logging.WARNING
