"""The triage result to the RIS, by accession number: HL7 v2 ORU^R01 over MLLP and FHIR R4.

Radiologists read from the RIS/PACS reading list. Beside the SR and SC into the study
(:mod:`pacs`), each scored (and each "not analysed") exam that has an accession number gets
a message to the RIS, built here and written to the outbox by the results task, then sent by
the same durable delivery loop as the SR/SC (:mod:`pacs.delivery`: states, attempts,
claims, the give-up schedule) with a sender of its own:

- :mod:`ris.exam`: what a message says (the exam's identifiers and the result);
- :mod:`ris.hl7v2`: the ORU^R01, built and checked with the ``hl7`` library;
- :mod:`ris.acks`: what the RIS's ACK means (delivered, retried or failed);
- :mod:`ris.mllp`: the MLLP sender, one connection per batch;
- :mod:`ris.fhir`: the FHIR R4 DiagnosticReport and its sender;
- :mod:`ris.outbox`: the message files, written atomically, read back before sending.

Nothing here logs patient data: messages are named by their control id, rows by id.
"""
