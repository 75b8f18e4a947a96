"""Log lines never carry a known secret value: every record's message (its arguments filled
in) and traceback are redacted as the record is made, whichever logger or handler emits it
(uvicorn's access log included).

Logging is the process's, not one server's, so this wraps the process's record factory while a
server runs; a second server in the same process (tests) wraps the first's, and each one, once
closed, only passes records through.
"""

from __future__ import annotations

import logging
import traceback
from collections.abc import Callable
from typing import Any

from pilothouse.secrets.redact import Redactor


class RedactedLogs:
    """Redacts log records with the redactor ``source`` gives at the time."""

    def __init__(self, source: Callable[[], Redactor]) -> None:
        self._source = source
        self._active = False
        self._previous: Callable[..., logging.LogRecord] | None = None

    def install(self) -> None:
        """Wrap the record factory (until ``uninstall``)."""
        self._previous = logging.getLogRecordFactory()
        self._active = True
        logging.setLogRecordFactory(self._make)

    def uninstall(self) -> None:
        """Stop redacting; unwrap the factory if nothing wrapped it since."""
        self._active = False
        if logging.getLogRecordFactory() == self._make and self._previous is not None:
            logging.setLogRecordFactory(self._previous)

    def _make(self, *args: Any, **kwargs: Any) -> logging.LogRecord:
        assert self._previous is not None
        record = self._previous(*args, **kwargs)
        if not self._active:
            return record
        redactor = self._source()
        if not len(redactor):
            return record
        try:
            message = record.getMessage()
        except (TypeError, ValueError):  # a bad format: logging reports it when it emits
            return record
        redacted = redactor.redact(message)
        if redacted is not message:
            record.msg, record.args = redacted, None
        if record.exc_info and record.exc_info[1] is not None:
            text = "".join(traceback.format_exception(*record.exc_info)).rstrip("\n")
            record.exc_text = redactor.redact(text)
            if record.exc_text is not text:
                record.exc_info = None  # the formatter would format the original again
        return record
