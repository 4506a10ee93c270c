"""The "open in PACS viewer" link: a site's URL template with the study's identifiers.

``CXR_WEB_PACS_VIEWER_URL`` names where a study opens: OHIF
(``https://pacs.example/ohif/viewer?StudyInstanceUIDs={StudyInstanceUID}``), Orthanc's
viewers (``.../stone-webviewer/index.html?study={StudyInstanceUID}``) or the site's own PACS
(``...?accession={AccessionNumber}``). Only the two placeholders are known; each value is
percent-encoded whole (``/``, ``?``, ``&``, ``#`` included), so a header value can add
nothing to the URL but itself. The template must be an absolute http(s) URL: the scheme is
the site's choice, never a header's.
"""

from __future__ import annotations

import re
from urllib.parse import quote, urlsplit

PLACEHOLDERS = ("StudyInstanceUID", "AccessionNumber")
_FIELD = re.compile(r"\{([^{}]*)\}")


class PacsLinkError(ValueError):
    """The template cannot make safe links."""


def check_template(template: str) -> str:
    """``template`` if usable (empty: no link); :class:`PacsLinkError` naming the problem."""
    if not template:
        return template
    parts = urlsplit(template)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise PacsLinkError("CXR_WEB_PACS_VIEWER_URL must be an absolute http:// or https:// URL")
    names = _FIELD.findall(template)
    unknown = sorted(set(names) - set(PLACEHOLDERS))
    if unknown:
        raise PacsLinkError(
            f"CXR_WEB_PACS_VIEWER_URL: unknown placeholder(s) {unknown}; "
            f"known: {{StudyInstanceUID}}, {{AccessionNumber}}"
        )
    if not names:
        raise PacsLinkError(
            "CXR_WEB_PACS_VIEWER_URL names no study: use {StudyInstanceUID} or {AccessionNumber}"
        )
    if "{" in _FIELD.sub("", template) or "}" in _FIELD.sub("", template):
        raise PacsLinkError("CXR_WEB_PACS_VIEWER_URL has an unpaired brace")
    return template


def pacs_link(template: str, study_instance_uid: str | None, accession_number: str | None) -> str:
    """The link for one study, or "" when there is no template or a value it needs is
    missing (a JPEG without identifiers: the reader finds the study in PACS by hand)."""
    if not template:
        return ""
    values = {"StudyInstanceUID": study_instance_uid, "AccessionNumber": accession_number}
    missing = False

    def fill(match: re.Match[str]) -> str:
        nonlocal missing
        value = (values.get(match.group(1)) or "").strip()
        if not value:
            missing = True
        return quote(value, safe="")

    link = _FIELD.sub(fill, template)
    return "" if missing else link
