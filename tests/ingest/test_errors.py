"""Every reason a file goes unscored says where the reading list puts it (ingest/errors.py).

A reason added without a disposition would be read as unknown risk by the database (the safe
side), but silently: these tests make the choice explicit, reason by reason.
"""

from __future__ import annotations

import pytest

from ingest.errors import (
    DISPOSITIONS,
    NOT_FOR_DEVICE_REASONS,
    Disposition,
    Reason,
    disposition,
)

#: Written out, not derived: moving a reason across the line is a decision to review here.
NOT_THE_DEVICES_TO_READ = {
    "wrong_sop_class",  # an SR, a presentation state, a CT image object
    "wrong_modality",  # a CT, an MR, an ultrasound
    "dx_for_processing",  # the raw image; the for-presentation one is read
    "not_chest",  # a hand, a knee
    "lateral_view",
    "non_frontal_view",  # oblique, decubitus
}


@pytest.mark.parametrize("reason", list(Reason), ids=str)
def test_every_reason_has_a_disposition(reason: Reason) -> None:
    assert reason in DISPOSITIONS, f"{reason!r}: add it to ingest.errors.DISPOSITIONS"
    expected = (
        Disposition.NOT_FOR_DEVICE
        if reason.value in NOT_THE_DEVICES_TO_READ
        else Disposition.UNKNOWN_RISK
    )
    assert disposition(reason.value) is expected


def test_the_table_holds_reasons_only() -> None:
    known = {reason.value for reason in Reason}
    assert set(DISPOSITIONS) <= known
    assert NOT_FOR_DEVICE_REASONS == NOT_THE_DEVICES_TO_READ


def test_what_the_content_check_or_the_worker_refused_is_unknown_risk() -> None:
    """The content check refuses real children's films (issue 19); a failure says nothing
    about the film: neither may sink a child below the cases the model called normal."""
    for value in (
        "not_chest_radiograph",
        "outside_training_population",
        "processing_error",
        "too_many_attempts",
        "truncated",
        "corrupt",
        "blank_image",
    ):
        assert disposition(value) is Disposition.UNKNOWN_RISK, value


def test_a_value_nobody_knows_is_unknown_risk() -> None:
    """A row written by another version, or stored without a reason, stays in the order."""
    assert disposition("written_by_a_later_version") is Disposition.UNKNOWN_RISK
    assert disposition(None) is Disposition.UNKNOWN_RISK
    assert disposition("") is Disposition.UNKNOWN_RISK


@pytest.mark.parametrize("reason", list(Reason), ids=str)
def test_every_reason_is_said_in_words_a_reader_can_act_on(reason: Reason) -> None:
    """The review page shows why a row was not scored: never a bare code (issue 22)."""
    from ingest.errors import NOT_ANALYSED_IN_WORDS, REASON_IN_WORDS, reason_in_words

    words = reason_in_words(reason.value)
    assert words == REASON_IN_WORDS[reason]
    assert reason.value not in words and "_" not in words
    if reason in NOT_ANALYSED_IN_WORDS:
        assert words == NOT_ANALYSED_IN_WORDS[reason]
    if disposition(reason.value) is Disposition.NOT_FOR_DEVICE:
        assert words.startswith("Not the device's to read")
    else:  # unknown risk is never worded as if it were low risk
        assert words.startswith("Not analysed")


def test_an_unknown_stored_reason_still_reads_as_not_analysed() -> None:
    from ingest.errors import reason_in_words

    assert reason_in_words("reason_from_a_newer_version").startswith("Not analysed")
    assert reason_in_words(None).startswith("Not analysed")
