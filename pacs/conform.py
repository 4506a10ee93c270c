"""Header values from the field made conformant before a result carries them (PS3.5 6.2).

Real radiographs carry values their own standard forbids: a Patient Birth Date written
``2021-01-15``, a Study Time ``10:30:00``, a lower-case Body Part, a name component longer
than 64 characters, control characters. highdicom refuses to build an object holding such a
value ("strict when writing"), and copying it as it is would make an invalid SR or SC. So
each value is, in this order:

1. decoded to text with the source's own (0008,0005) Specific Character Set (pydicom);
2. repaired where the intent is unambiguous (:func:`repair`: date and time separators
   dropped, code strings upper-cased, control characters and padding removed);
3. checked with pydicom's validator for its VR; a value that still fails is left out
   (:func:`conform` returns ``None``), never copied.

No value is ever logged or put in an error message: these are patient data.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from pydicom import config
from pydicom.multival import MultiValue
from pydicom.valuerep import PersonName, validate_value

#: PS3.5 6.2: the only VRs whose values may hold CR, LF, FF and TAB.
_TEXT_VRS = frozenset({"LT", "ST", "UT"})
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_TEXT_CONTROL = re.compile(r"[\x00-\x08\x0b\x0e-\x1f\x7f]")
_DATE = re.compile(r"^(\d{4})[-./](\d{2})[-./](\d{2})$")
_TIME = re.compile(r"^(\d{2}):(\d{2})(?::(\d{2})(\.\d{1,6})?)?$")


def repair(vr: str, text: str) -> str:
    """``text`` with the unambiguous, meaning-preserving fixes for ``vr`` applied.

    - every VR: control characters removed (CR/LF/FF/TAB kept in LT/ST/UT), leading and
      trailing spaces and NUL padding removed (PS3.5 6.2: they are not significant);
    - DA: ``YYYY-MM-DD``, ``YYYY.MM.DD`` (ACR-NEMA) and ``YYYY/MM/DD`` become ``YYYYMMDD``;
    - TM: ``HH:MM[:SS[.FFFFFF]]`` (ACR-NEMA) becomes ``HHMM[SS[.FFFFFF]]``;
    - CS: upper case (the repertoire is upper-case letters, digits, space and underscore).
    """
    pattern = _TEXT_CONTROL if vr in _TEXT_VRS else _CONTROL
    text = pattern.sub("", text).strip(" \x00")
    if vr == "DA" and (match := _DATE.match(text)):
        text = "".join(match.groups())
    elif vr == "TM" and (match := _TIME.match(text)):
        text = "".join(part for part in match.groups() if part)
    elif vr == "CS":
        text = text.upper()
    return text


def is_valid(vr: str, text: str) -> bool:
    """Whether ``text`` is a valid single value of ``vr`` (pydicom's PS3.5 validator)."""
    try:
        validate_value(vr, text, config.RAISE)
    except ValueError:
        return False
    return True


def conform(vr: str, value: object) -> str | list[str] | None:
    """``value`` (as pydicom read it) repaired and validated for ``vr``.

    Returns the conformant text (a list for several values), ``""`` for an empty value, or
    ``None`` when nothing valid is left: the caller leaves the attribute out (Type 3) or
    empty (Type 2). Multi-valued: the valid values are kept, the invalid ones dropped.
    """
    if value is None:
        return ""
    values = list(value) if isinstance(value, MultiValue | list | tuple) else [value]
    kept = [text for text in _texts(vr, values) if text and is_valid(vr, text)]
    if not kept:
        return "" if all(_text(item) == "" for item in values) else None
    return kept[0] if len(kept) == 1 else kept


def _texts(vr: str, values: Iterable[object]) -> Iterable[str]:
    for value in values:
        yield repair(vr, _text(value))


def _text(value: object) -> str:
    if isinstance(value, PersonName):
        return str(value)
    if isinstance(value, bytes):  # undecodable: never guessed
        return ""
    return "" if value is None else str(value)
