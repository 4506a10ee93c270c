"""Results back to PACS: a DICOM Structured Report and a Secondary Capture per scored DICOM.

- :func:`pacs.outbox.write_results` - the one call the worker makes after scoring a DICOM;
- :func:`pacs.sr.build_report` - the Comprehensive SR (TID 1500 measurement report);
- :func:`pacs.sc.build_capture` - the Secondary Capture with the result burned in;
- :func:`pacs.store.send` - C-STORE to the configured PACS (:mod:`pacs.statuses`: what each
  answer means); :mod:`pacs.delivery` - the durable delivery loop;
- :mod:`pacs.not_analysed` - which unscored films get a "not analysed" SR, and its words;
- :mod:`pacs.catchup` - C-FIND/C-MOVE of the studies the worklist never got (optional).

Only DICOM inputs get results here: a JPEG/PNG has no patient or study to attach them to.
Every object says it is not for diagnostic use.
"""
