"""Every coded concept the results use, in one table (PS3.16 codes where they exist).

| meaning in cxr-triage          | scheme      | code      | code meaning                      |
|--------------------------------|-------------|-----------|-----------------------------------|
| document title                 | DCM         | 126000    | Imaging Measurement Report        |
| procedure reported             | SCT         | 399208008 | Plain chest X-ray                 |
| finding (what the model looks) | SCT         | 233604007 | Pneumonia                         |
| finding site                   | SCT         | 39607008  | Lung                              |
| label pneumonia / normal       | SCT         | 52101004 / 272519000 | Present / Absent      |
| calibrated probability         | DCM         | 122157    | Probability (unit UCUM "1")       |
| operating threshold            | DCM         | 122411    | Threshold Value (unit UCUM "1")   |
| worklist priority (name)       | SCT         | 260870009 | Priority                          |
| priority urgent/suspect/routine| 99CXRTRIAGE | URGENT... | local values: no standard code    |
| population caveat (name)       | 99CXRTRIAGE | POPULATION | Training population              |
| population caveat (value)      | 99CXRTRIAGE | OUTSIDE   | Outside the training population   |

The three priority values and the population caveat are this product's own categories, so
they come from a private coding scheme (PS3.16 8.2: designators starting with "99"),
declared in the SR's Coding Scheme Identification Sequence.
"""

from __future__ import annotations

from highdicom.coding_schemes import CodingSchemeIdentificationItem
from highdicom.sr import CodedConcept

from model.prediction import Label, Priority

LOCAL_SCHEME = "99CXRTRIAGE"


def local_scheme() -> CodingSchemeIdentificationItem:
    """The Coding Scheme Identification item that declares :data:`LOCAL_SCHEME`."""
    return CodingSchemeIdentificationItem(
        designator=LOCAL_SCHEME, name="cxr-triage worklist priorities", version="1"
    )


TITLE = CodedConcept("126000", "DCM", "Imaging Measurement Report")
PLAIN_CHEST_XRAY = CodedConcept("399208008", "SCT", "Plain chest X-ray")
PNEUMONIA = CodedConcept("233604007", "SCT", "Pneumonia")
LUNG = CodedConcept("39607008", "SCT", "Lung")
PRESENT = CodedConcept("52101004", "SCT", "Present")
ABSENT = CodedConcept("272519000", "SCT", "Absent")
PROBABILITY = CodedConcept("122157", "DCM", "Probability")
THRESHOLD = CodedConcept("122411", "DCM", "Threshold Value")
PRIORITY = CodedConcept("260870009", "SCT", "Priority")
NO_UNITS = CodedConcept("1", "UCUM", "no units")

LABEL_VALUES: dict[Label, CodedConcept] = {Label.PNEUMONIA: PRESENT, Label.NORMAL: ABSENT}
PRIORITY_VALUES: dict[Priority, CodedConcept] = {
    Priority.URGENT: CodedConcept("URGENT", LOCAL_SCHEME, "Urgent: at or above the threshold"),
    Priority.SUSPECT: CodedConcept(
        "SUSPECT", LOCAL_SCHEME, "Suspect: below threshold, above sensitive cut-off"
    ),
    Priority.ROUTINE: CodedConcept("ROUTINE", LOCAL_SCHEME, "Routine: below both cut-offs"),
}
#: Present only when the row is flagged ``outside_training_population``.
TRAINING_POPULATION = CodedConcept("POPULATION", LOCAL_SCHEME, "Training population")
OUTSIDE_TRAINING_POPULATION = CodedConcept(
    "OUTSIDE", LOCAL_SCHEME, "Outside the training population: the probability may not hold"
)
