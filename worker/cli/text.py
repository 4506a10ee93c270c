"""Text from outside (file names, header fields, forwarded addresses) made safe to print on
a terminal: control characters shown as escapes, never sent as themselves.

A file name holding ``ESC ] 8 ;;`` makes a hyperlink, ``ESC [ 2 J`` clears the screen and
``ESC ] 0 ;`` retitles the window of whoever runs ``cxr-triage worklist`` (issue 20); the
right-to-left override makes ``gpj.exe`` read ``exe.jpg``. Rich escapes its own markup but
passes these through.
"""

from __future__ import annotations

import re

#: C0 controls (tab and newline included: a table cell has no use for them), DEL, C1
#: controls, and the bidirectional overrides and isolates.
UNPRINTABLE = re.compile(r"[\x00-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


def printable(text: str) -> str:
    """``text`` with every unprintable character as ``\\xNN`` or ``\\uNNNN``."""
    return UNPRINTABLE.sub(_escape, text)


def _escape(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"
