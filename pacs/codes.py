"""Every coded concept the results use, in one table: standard codes wherever one exists.

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
| priority urgent                | SCT         | 103391001 | Urgent                            |
| priority routine               | SCT         | 50811001  | Routine                           |
| priority suspect               | 99CXRTRIAGE | SUSPECT   | private: no standard concept      |
| analysed or not (name)         | DCM         | 111017    | CAD Processing and Findings Summary|
| analysed, pneumonia            | DCM         | 111242    | All algorithms succeeded; with ... |
| analysed, no pneumonia         | DCM         | 111241    | ... succeeded; without findings   |
| not analysed                   | DCM         | 111245    | No algorithms succeeded; without ..|
| caveats, reason not analysed   | DCM         | 121106    | Comment (TEXT: the words)         |
| population caveat (name)       | 99CXRTRIAGE | POPULATION | private: Training population     |
| population caveat (value)      | 99CXRTRIAGE | OUTSIDE   | private: Outside the training pop.|

SNOMED CT's priorities (the children of 272125009 |Priorities|) have Urgent and Routine; the
middle tier, "below the label threshold but above the high-sensitivity cut-off: read before
routine cases", has no standard concept (High priority 394849002 would read as above
Urgent in many RIS), so it stays in the private scheme, as does the population caveat, a
property of this model's training data. PS3.16 8.2: designators starting with "99" are
private; this one is declared in the SR's Coding Scheme Identification Sequence. The
CAD Processing and Findings Summary values come from CID 6047 (the CAD SR templates): the
way DICOM says whether an algorithm ran on the image at all, which IHE AI Results asks an
AI result to state.
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
    Priority.URGENT: CodedConcept("103391001", "SCT", "Urgent"),
    Priority.SUSPECT: CodedConcept(
        "SUSPECT", LOCAL_SCHEME, "Suspect: below threshold, above sensitive cut-off"
    ),
    Priority.ROUTINE: CodedConcept("50811001", "SCT", "Routine"),
}
#: Present only when the row is flagged ``outside_training_population``.
TRAINING_POPULATION = CodedConcept("POPULATION", LOCAL_SCHEME, "Training population")
OUTSIDE_TRAINING_POPULATION = CodedConcept(
    "OUTSIDE", LOCAL_SCHEME, "Outside the training population: the probability may not hold"
)
#: CID 6047: whether the algorithm ran, and found something.
CAD_SUMMARY = CodedConcept("111017", "DCM", "CAD Processing and Findings Summary")
ANALYSED_WITH_FINDINGS = CodedConcept("111242", "DCM", "All algorithms succeeded; with findings")
ANALYSED_WITHOUT_FINDINGS = CodedConcept(
    "111241", "DCM", "All algorithms succeeded; without findings"
)
NOT_ANALYSED = CodedConcept("111245", "DCM", "No algorithms succeeded; without findings")
#: The name of the TEXT items: the age caveat, the reason a film was not analysed.
COMMENT = CodedConcept("121106", "DCM", "Comment")
