"""Keep patient data out of logs, whatever ``CXR_LOG_LEVEL`` says.

Two layers, installed in every process by :func:`install_phi_guard` (the service commands
and the web page through ``service.configure_logging``, the Celery worker and its prefork
children through ``worker.lifecycle``'s logging signal):

1. **Caps on PHI-prone loggers.** watchdog logs every inotify event with its path at DEBUG,
   highdicom logs the source SOP Instance UID at INFO when it copies the patient module into
   an SR, pynetdicom dumps every DIMSE message (UIDs) at DEBUG in ``listen`` and the delivery
   loop, pydicom warns with the offending value of an invalid element (a patient name, a
   birth date).

2. **One redaction filter on every log record** (:class:`PhiRedactionFilter`, run by the
   log record factory, so it holds for handlers that Celery, uvicorn or a library add
   later). It redacts what the project cannot vouch for:

   - *Our own loggers* (``worker``, ``ingest``, ``db``, ``model``, ``pacs``, ``web``) keep
     their message and arguments: they name rows by id and content hash, never a file name
     or a header value (the reliability suite's PHI test runs the pipeline at DEBUG to hold
     that).
   - *Exceptions* anywhere, as an argument or a traceback, keep their type and stack but
     only the text we can vouch for: our own exception classes' messages; an ``OSError``'s
     errno and strerror without its file names; for anything else (a database driver that
     quotes the row's values, a library that quotes a path) the type alone.
   - *Other libraries' records* keep their message template; each argument that is not a
     number, a UUID or a hex digest becomes ``[redacted]`` (Celery's retry log, kombu's
     errors). A message pre-formatted without arguments has its quoted strings, paths, file
     names and UIDs scrubbed.
   - *Except the few library records whose values are the system's own configuration*
     (:data:`VOUCHED_TEMPLATES`, :data:`VOUCHED_LOGGERS`): the address the web server listens
     on, the broker Celery connected to (its password masked), the worker's node name,
     Alembic's migration steps. Matched by logger name and exact message template, so a
     library message that quotes input is never among them; an operator reading the log
     needs these to know what the system is doing, and they carry no patient data.
   - *Python warnings* (highdicom warns "The string "<a patient name>" is unlikely to
     represent the intended person name ...") go to the ``worker.warnings`` logger as
     their category and source line only, their text withheld.

A message that needs a value to be useful names the row id instead; the value is in the
worklist, which is access-controlled like the images.
"""

from __future__ import annotations

import logging
import re
import traceback
import warnings
from collections.abc import Mapping
from enum import Enum
from types import TracebackType
from typing import Any, TextIO

#: Logger name -> the lowest level it may emit.
PHI_LOGGER_LEVELS = {
    "watchdog": logging.WARNING,  # DEBUG: every event with its file path
    "highdicom": logging.WARNING,  # INFO: "copy Patient-related attributes from dataset <UID>"
    "pydicom": logging.ERROR,  # WARNING: "Invalid value for VR PN: '<the value>'"
    "pynetdicom": logging.INFO,  # DEBUG: every PDU and DIMSE message, UIDs included
}

#: Library records whose arguments come from this system's configuration, never from input:
#: (logger name, message template). Their values are logged as they are (URL passwords
#: masked); every other library value is redacted.
VOUCHED_TEMPLATES = frozenset(
    {
        ("uvicorn.error", "Uvicorn running on %s://%s:%d (Press CTRL+C to quit)"),
        ("uvicorn.error", "Uvicorn running on %s://[%s]:%d (Press CTRL+C to quit)"),
        ("celery.worker.consumer.connection", "Connected to %s"),  # Celery masks the password
        ("celery.apps.worker", "%s ready."),  # the node name, celery@<host>
        ("flower.command", "Visit me at http%s://%s:%s%s"),
        ("flower.command", "Broker: %s"),
    }
)
#: Loggers all of whose records are vouched for: Alembic's migration runner names our own
#: revisions and their titles ("Running upgrade 0004 -> 0005, ...") and the SQL dialect.
VOUCHED_LOGGERS = frozenset({"alembic.runtime.migration"})

#: Top-level packages whose log messages and exception texts this project vouches for.
OWN_PACKAGES = frozenset({"worker", "ingest", "db", "model", "pacs", "web", "bench"})
REDACTED = "[redacted]"
WITHHELD = "(message withheld: it may carry patient data)"

_VOUCHED_STRING = re.compile(
    r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"  # a Celery task id
    r"|[0-9a-f]{12,64}"  # a content hash or its prefix
    r"|cxr\.[a-z_]+",  # our own Celery task names
)
#: Celery's retry reason, ``Retry in 2s: OperationalError('...')``: the countdown and the
#: exception's type are what an operator reads in an outage; the repr's values are not kept.
_CELERY_RETRY = re.compile(r"(Retry (?:in [\d.]+s|at [\d:T.+-]+))(?:: ([A-Za-z_][\w.]*)\()?")
_SCRUB = [
    re.compile(r"'[^']*'|\"[^\"]*\""),  # quoted values: paths, names, element values
    re.compile(r"(?:[A-Za-z]:)?[/\\][^\s,;:'\"()\[\]]+"),  # absolute paths
    re.compile(r"\b\S+\.(?:dcm|dicom|ima|jpe?g|png|tiff?|part)\b", re.IGNORECASE),  # files
    re.compile(r"\b\d+(?:\.\d+){3,}\b"),  # DICOM UIDs
    re.compile(r"\b[^\s^]+\^[^\s]*"),  # person names (PN: family^given)
]


_URL_PASSWORD = re.compile(r"(\w+://[^/\s:@]*:)[^@\s]+@")


def _is_own(module_or_logger: str) -> bool:
    return module_or_logger.split(".", 1)[0] in OWN_PACKAGES


def _is_vouched(record: logging.LogRecord) -> bool:
    return record.name in VOUCHED_LOGGERS or (record.name, record.msg) in VOUCHED_TEMPLATES


def mask_url_passwords(text: str) -> str:
    """A URL's password (between the user name's ``:`` and the ``@``) becomes ``**``."""
    return _URL_PASSWORD.sub(r"\1**@", text)


def scrub(text: str) -> str:
    """``text`` with quoted strings, paths, file names, UIDs and PN values replaced."""
    for pattern in _SCRUB:
        text = pattern.sub(REDACTED, text)
    return text


def exception_text(error: BaseException) -> str:
    """What a log may say about ``error``: its type, and only text the project vouches for."""
    kind = type(error).__qualname__
    if _is_own(type(error).__module__):
        return f"{kind}: {error}"
    if isinstance(error, OSError) and error.errno is not None:
        return f"{kind}: [Errno {error.errno}] {error.strerror}"
    return f"{kind} {WITHHELD}"


def traceback_text(
    kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None
) -> str:
    """A traceback as ``logging`` would print it, each exception's text by
    :func:`exception_text`; frames keep file, line and source (code, not data)."""
    if error is None:
        return kind.__qualname__ if kind else ""
    chain: list[tuple[BaseException, str | None]] = []
    seen: set[int] = set()
    current: BaseException | None = error
    link: str | None = None
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        chain.append((current, link))
        if current.__cause__ is not None:
            current, link = current.__cause__, "direct cause"
        elif current.__context__ is not None and not current.__suppress_context__:
            current, link = current.__context__, "context"
        else:
            current = None
    parts: list[str] = []
    for index, (item, _) in enumerate(reversed(chain)):
        if index:
            joined = chain[len(chain) - index][1]
            parts.append(
                "\nThe above exception was the direct cause of the following exception:\n\n"
                if joined == "direct cause"
                else "\nDuring handling of the above exception, another exception occurred:\n\n"
            )
        frames = item.__traceback__ if item is not error else (tb or item.__traceback__)
        if frames is not None:
            parts.append("Traceback (most recent call last):\n")
            parts.extend(traceback.format_tb(frames))
        parts.append(exception_text(item) + "\n")
    return "".join(parts).rstrip("\n")


def _safe_arg(value: object) -> object:
    """A third-party record's argument as logged: numbers stay, exceptions are described,
    every other value is redacted unless it is a task id or a hash."""
    if value is None or isinstance(value, bool | int | float):
        return value
    if isinstance(value, BaseException):
        return exception_text(value)
    if isinstance(value, Enum):
        return value.name
    if isinstance(value, str) and _VOUCHED_STRING.fullmatch(value):
        return value
    if isinstance(value, str) and (retry := _CELERY_RETRY.match(value)):
        kind = f": {retry.group(2)} {WITHHELD}" if retry.group(2) else ""
        return retry.group(1) + kind
    return REDACTED


def _vouched_args(args: Any) -> Any:
    """Our own record's arguments: kept, except exceptions (described)."""
    if isinstance(args, Mapping):
        return {
            k: exception_text(v) if isinstance(v, BaseException) else v for k, v in args.items()
        }
    if isinstance(args, tuple):
        return tuple(exception_text(v) if isinstance(v, BaseException) else v for v in args)
    return args


def _redacted_args(args: Any) -> Any:
    if isinstance(args, Mapping):
        return {k: _safe_arg(v) for k, v in args.items()}
    if isinstance(args, tuple):
        return tuple(_safe_arg(v) for v in args)
    return args


class PhiRedactionFilter(logging.Filter):
    """Rewrites a record (never drops it) so that it carries only what the project vouches
    for; see the module docstring for the rules. Idempotent."""

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "phi_redacted", False):
            return True
        record.phi_redacted = True
        if record.exc_info:
            record.exc_text = traceback_text(*record.exc_info)
            record.exc_info = None  # every formatter now prints the redacted text above
        elif record.exc_text:
            record.exc_text = scrub(record.exc_text)
        if isinstance(record.msg, BaseException):  # log.error(error)
            record.msg = exception_text(record.msg)
        if _is_own(record.name):
            record.args = _vouched_args(record.args)
            return True
        if _is_vouched(record):  # the system's own addresses, names and migrations
            record.args = _vouched_args(record.args)
            try:
                record.msg, record.args = mask_url_passwords(record.getMessage()), ()
            except (TypeError, ValueError):
                record.msg, record.args = scrub(str(record.msg)), ()
            return True
        # Another library's record: its values redacted, then what it formatted in itself.
        record.args = _redacted_args(record.args)
        try:
            message = record.getMessage()
        except (TypeError, ValueError):  # a template its arguments do not fit
            message = str(record.msg)
        record.msg, record.args = scrub(message), ()
        return True


_FILTER = PhiRedactionFilter()


def _redacting_factory(factory: Any) -> Any:
    def make_record(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record: logging.LogRecord = factory(*args, **kwargs)
        _FILTER.filter(record)
        return record

    make_record.phi_guard = True  # type: ignore[attr-defined]
    return make_record


def _log_warning(
    message: Warning | str,
    category: type[Warning],
    filename: str,
    lineno: int,
    file: TextIO | None = None,
    line: str | None = None,
) -> None:
    """``warnings.showwarning``: the category and where it was raised, never its text (it
    is the library's, and quotes values: highdicom quotes patient names)."""
    logging.getLogger("worker.warnings").warning(
        "%s at %s:%d %s", category.__name__, filename, lineno, WITHHELD
    )


def cap_phi_loggers() -> None:
    """Raise the PHI-prone loggers to their caps and silence pydicom's value warnings."""
    for name, level in PHI_LOGGER_LEVELS.items():
        logger = logging.getLogger(name)
        logger.setLevel(max(level, logger.getEffectiveLevel()))
    warnings.filterwarnings("ignore", category=UserWarning, module=r"pydicom(\..*)?$")


def install_phi_guard() -> None:
    """Both layers, for this process and the children it forks; safe to call again."""
    cap_phi_loggers()
    factory = logging.getLogRecordFactory()
    if not getattr(factory, "phi_guard", False):
        logging.setLogRecordFactory(_redacting_factory(factory))
    logging.captureWarnings(False)  # ours below, not logging's (which logs the text)
    warnings.showwarning = _log_warning
