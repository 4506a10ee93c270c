"""What each PACS answer means (pacs/statuses.py): the standard's classes, and anything else
a PACS (or an attacker posing as one) may answer, classified without an error."""

from __future__ import annotations

import pytest

from pacs.statuses import Outcome, classify_rejection, classify_status


@pytest.mark.parametrize(
    ("code", "outcome", "words"),
    [
        (0x0000, Outcome.STORED, "success"),
        (0xB000, Outcome.STORED, "coercion"),
        (0xB007, Outcome.STORED, "does not match"),
        (0xB123, Outcome.STORED, "warning"),
        (0x0111, Outcome.STORED, "the PACS has it"),
        (0xA700, Outcome.TEMPORARY, "out of resources (temporary)"),
        (0xA7FF, Outcome.TEMPORARY, "out of resources"),
        (0x0110, Outcome.TEMPORARY, "processing failure"),
        (0x0213, Outcome.TEMPORARY, "resource limitation"),
        (0xFE00, Outcome.TEMPORARY, "cancelled"),
        (None, Outcome.TEMPORARY, "no response"),
        (0xA900, Outcome.PERMANENT, "does not match SOP Class"),
        (0xC000, Outcome.PERMANENT, "cannot understand"),
        (0xCFFF, Outcome.PERMANENT, "cannot understand"),
        (0x0122, Outcome.PERMANENT, "SOP Class not supported"),
        (0x0124, Outcome.PERMANENT, "not authorised"),
        (0x0117, Outcome.PERMANENT, "invalid object instance"),
        (0x1234, Outcome.TEMPORARY, "not defined by the standard"),
        (0xFFFF, Outcome.TEMPORARY, "not defined by the standard"),
    ],
)
def test_statuses(code, outcome, words):
    verdict = classify_status(code)
    assert verdict.outcome is outcome
    assert words in verdict.words
    if code is not None:
        assert f"0x{code:04X}" in verdict.words


@pytest.mark.parametrize(
    ("rejection", "permanent", "words"),
    [
        ((1, 1, 7), True, "called AE title not recognised"),
        ((1, 1, 3), True, "calling AE title not recognised"),
        ((1, 1, 2), True, "application context name not supported"),
        ((1, 2, 2), True, "protocol version not supported"),
        ((2, 1, 1), False, "no reason given"),
        ((2, 3, 2), False, "local limit exceeded"),
        ((1, 3, 1), False, "temporary congestion"),  # permanent by the field, not by nature
        ((1, 9, 9), True, "reason 9 from source 9"),  # nonsense from a peer: still words
        ((7, 1, 7), False, "called AE title"),  # not a defined result: never failed at once
    ],
)
def test_association_rejections(rejection, permanent, words):
    verdict = classify_rejection(*rejection)
    assert verdict.permanent is permanent
    assert words in verdict.words
