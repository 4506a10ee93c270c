"""The server-rendered pages: login, the worklist in reading order, one case, its review.

Reading needs any role; the review form is shown to, and accepted from, reviewers and
admins only (:class:`db.models.Role`).
"""

from __future__ import annotations

import gzip
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Annotated
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, Form, HTTPException, Query, Request, status
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from sqlalchemy.orm import Session
from starlette.responses import StreamingResponse

from db.models import ReviewDecision, ReviewRecord, Status, utcnow
from db.reading import TO_READ, ReadingPage
from db.reading_rule import APART, Tier
from db.results import objects_of, summary
from db.worklist import get_entry, next_to_read, review, review_history
from web import auth, drift_header, live, navigation, present
from web.database import ReadSession, WriteSession
from web.films import BusyError, Films, display_side
from web.overlays import FULL_SIDE, THUMBNAIL_SIDE, overlay_file
from web.pacs_link import pacs_link
from web.params import (
    MAX_ID,
    MAX_LIMIT,
    MAX_NOTE,
    MAX_OFFSET,
    EntryId,
    Filters,
    check_note,
    page_filters,
)

router = APIRouter()

#: Appended to the static files' URLs (``?v=``): a new release is fetched, not a stale copy.
STATIC_VERSION = "22.1"

Reader = Annotated[auth.Person, Depends(auth.page_user)]
Reviewer = Annotated[auth.Person, Depends(auth.page_reviewer)]


@router.get("/", include_in_schema=False)
def home() -> RedirectResponse:
    return RedirectResponse("/worklist", status.HTTP_303_SEE_OTHER)


@router.get("/login", response_class=HTMLResponse)
def login_form(request: Request, error: str = "") -> Response:
    return render(request, "login.html", {"error": error})


@router.post("/login")
def login(
    request: Request,
    username: Annotated[str, Form()],
    password: Annotated[str, Form()],
) -> Response:
    try:
        person = auth.authenticate(request, username, password, "form")
    except auth.LoginThrottledError as error:
        response = render(
            request,
            "login.html",
            {"error": f"Too many failed logins: {error}."},
            status.HTTP_429_TOO_MANY_REQUESTS,
        )
        response.headers.update(error.retry_after_header)
        return response
    if person is None:
        return render(
            request,
            "login.html",
            {"error": "Wrong user name or password."},
            status.HTTP_401_UNAUTHORIZED,
        )
    auth.start_session(request, person)
    return RedirectResponse("/worklist", status.HTTP_303_SEE_OTHER)


@router.post("/logout")
def logout(
    request: Request, session: WriteSession, csrf_token: Annotated[str, Form()] = ""
) -> Response:
    auth.check_csrf(request, csrf_token)
    person = auth.session_person(request)
    if person is not None:
        auth.audit_logout(session, request, person)
    auth.end_session(request)
    return RedirectResponse("/login", status.HTTP_303_SEE_OTHER)


@router.get("/worklist", response_class=HTMLResponse)
def worklist(
    request: Request,
    reader: Reader,
    session: ReadSession,
    chosen: Annotated[tuple[Filters, str], Depends(page_filters)],
    go: Annotated[int | None, Query(ge=1, le=MAX_OFFSET)] = None,
) -> Response:
    filters, error = chosen
    if go is not None and not error:  # "go to entry #": its page of the whole list
        offset = (go - 1) // filters.limit * filters.limit
        target = filters.model_copy(update={"tier": "", "offset": offset})
        return RedirectResponse(f"{_page_url(target)}#pos-{go}", status.HTTP_303_SEE_OTHER)
    snapshot = request.app.state.live.current()  # before the list: a change after it shows
    # the whole list to read: its counts are the shared snapshot's (one count per change,
    # not one per page view); a filtered view counts its own
    shared = snapshot.counts if filters.scope() == TO_READ else None
    page, counts = filters.listing(session, shared)
    results = {
        entry_id: summary(found)
        for entry_id, found in objects_of(session, [image.id for image in page.images]).items()
    }
    watch = drift_header.header_report(session, request.app.state.drift_reference)
    return render(
        request,
        "worklist.html",
        {
            "reader": reader,
            "page": page,
            "counts": counts,
            "cutoffs": present.page_cutoffs(page.images, request.app.state.card),
            "results": results,
            "filters": filters,
            "error": error,
            "notice": _limit_notice(request, filters),
            "filters_active": filters.model_dump(exclude={"offset", "limit"})
            != Filters().model_dump(exclude={"offset", "limit"}),
            "drift": watch,
            "newest_urgent_at": snapshot.newest_urgent_at,
            "live_version": snapshot.version,
            "tier_urls": {
                tier: _page_url(filters.model_copy(update={"tier": tier, "offset": 0}))
                for tier in ("urgent", "suspect", "routine", "apart")
            },
            "keep_filters": [
                (name, value)
                for name, value in filters.model_dump().items()
                if name not in ("offset", "tier") and value not in ("", None)
            ],
            **_paging(filters, page),
        },
    )


def _limit_notice(request: Request, filters: Filters) -> str:
    asked = request.query_params.get("limit", "")
    if asked.isdigit() and (len(asked) > 9 or int(asked) > MAX_LIMIT):
        return (
            f"A page holds at most {MAX_LIMIT} entries: showing {MAX_LIMIT} a page; "
            "page on below to reach every entry."
        )
    return ""


def _paging(filters: Filters, page: ReadingPage) -> dict[str, str]:
    """First, previous, next and last pages of this view (the tier's, or both lists)."""
    total = page.apart_total if filters.tier == "apart" else page.total
    limit, offset = filters.limit, filters.offset
    last = max(0, (total - 1) // limit * limit)
    return {
        "first_url": _page_url(filters.model_copy(update={"offset": 0})) if offset else "",
        "previous_url": _page_url(filters.model_copy(update={"offset": max(offset - limit, 0)}))
        if offset
        else "",
        "next_url": _page_url(filters.model_copy(update={"offset": offset + limit}))
        if offset + limit < total
        else "",
        "last_url": _page_url(filters.model_copy(update={"offset": last}))
        if offset + limit < total
        else "",
    }


def _page_url(filters: Filters) -> str:
    """The worklist with these filters (empty ones left out)."""
    query = filters.model_dump()
    return "/worklist?" + urlencode({k: v for k, v in query.items() if v not in ("", None)})


@router.get("/worklist/live")
def live_state(request: Request, reader: Reader) -> Response:
    """The list's version, entries per tier, the newest URGENT image: for tools and tests
    (the page itself listens to ``/worklist/events``). ``If-None-Match`` answers 304."""
    snapshot = request.app.state.live.current()
    etag = f'"{snapshot.version}"'
    headers = {"ETag": etag, "Cache-Control": "private, no-cache"}
    if request.headers.get("if-none-match") == etag:
        return Response(status_code=status.HTTP_304_NOT_MODIFIED, headers=headers)
    return JSONResponse(snapshot.as_json(), headers=headers)


@router.get("/worklist/events")
async def live_events(request: Request, reader: Reader) -> StreamingResponse:
    """Server-sent events: the list's snapshot each time it changes (web/live.py)."""
    return StreamingResponse(
        live.events(request),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )


@router.get("/worklist/{entry_id}", response_class=HTMLResponse)
def case(
    request: Request,
    entry_id: EntryId,
    reader: Reader,
    session: ReadSession,
    saved: Annotated[int | None, Query(ge=1, le=MAX_ID)] = None,
) -> Response:
    entry = get_entry(session, entry_id)
    if entry is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"worklist row {entry_id} not found")
    films: Films = request.app.state.films
    card = request.app.state.card
    cutoffs = present.row_cutoffs(entry, card)
    tier = Tier(entry.reading_tier).label if entry.reading_tier is not None else APART
    has_film = entry.status is Status.DONE and films.archived(entry.archived_path) is not None
    has_heatmap = (
        has_film and entry.probability is not None and films.heatmap_path(entry.file_sha256)
    )
    config = request.app.state.config
    return render(
        request,
        "case.html",
        {
            "reader": reader,
            "entry": entry,
            "tier": tier,
            "tier_words": present.TIER_WORDS.get(entry.priority or "", ""),
            "why": present.why_unscored(entry),
            "cutoffs": cutoffs,
            "result_objects": objects_of(session, [entry_id]).get(entry_id, []),
            "nav": navigation.neighbours(session, entry_id, request.app.state.live),
            "reviews": review_history(session, entry_id),
            "saved": _saved(session, saved),
            "has_film": has_film,
            "has_heatmap": bool(has_heatmap),
            "legacy_overlay": has_film
            and not has_heatmap
            and overlay_file(config.overlay_dir, entry.file_sha256).is_file(),
            "pacs_url": pacs_link(
                config.pacs_viewer_url, entry.study_instance_uid, entry.accession_number
            ),
        },
    )


def _saved(session: Session, entry_id: int | None) -> ReviewRecord | None:
    """The latest review of ``entry_id``, for the confirmation after a review was saved
    (read back from the history, so the page says what the database holds)."""
    if entry_id is None:
        return None
    history = review_history(session, entry_id)
    return history[-1] if history else None


@router.post("/worklist/{entry_id}/review")
def review_case(
    request: Request,
    entry_id: EntryId,
    reader: Reviewer,
    session: WriteSession,
    decision: Annotated[ReviewDecision, Form()],
    csrf_token: Annotated[str, Form()] = "",
    note: Annotated[str, Form(max_length=MAX_NOTE)] = "",
) -> Response:
    auth.check_csrf(request, csrf_token)
    try:
        cleaned = check_note(note)
    except ValueError as error:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, str(error)) from error
    try:
        review(session, entry_id, decision, reader.name, note=cleaned)
    except LookupError as error:
        raise HTTPException(status.HTTP_404_NOT_FOUND, str(error)) from error
    auth.audit_review(session, request, reader, entry_id, decision.value, "form")
    following = next_to_read(session, entry_id)
    target = f"/worklist/{following.id}" if following else f"/worklist/{entry_id}"
    # the next case says the review was saved (read back from the history)
    return RedirectResponse(f"{target}?saved={entry_id}", status.HTTP_303_SEE_OTHER)


@router.get("/worklist/{entry_id}/image.png")
def image(
    request: Request, entry_id: EntryId, reader: Reader, session: ReadSession, size: str = "thumb"
) -> Response:
    """The stored overlay (heatmap burned in), else the plain radiograph: the API's
    ``image_url`` for integrations. The page itself draws the film and the heatmap apart."""
    if size not in ("thumb", "full"):
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, "size is thumb or full")
    entry = get_entry(session, entry_id)
    if entry is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"worklist row {entry_id} not found")
    sha, archived = entry.file_sha256, entry.archived_path
    session.close()  # the connection goes back to the pool before the (slow) decode
    side = THUMBNAIL_SIDE if size == "thumb" else FULL_SIDE
    data = request.app.state.thumbnails.png(sha, archived, side)
    if data is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "no image for this row")
    return Response(data, media_type="image/png", headers=dict(IMAGE_CACHING))


@router.get("/worklist/{entry_id}/thumb.webp")
def thumbnail(
    request: Request, entry_id: EntryId, reader: Reader, session: ReadSession
) -> Response:
    """The plain film, 96 px (WebP, a few KB): the worklist's thumbnail."""
    source, sha = _film_source(request, session, entry_id)
    films: Films = request.app.state.films
    stored = films.stored_thumbnail(sha)
    return _image(
        request,
        films.etag(stored or source, "thumb"),
        "image/webp",
        lambda: films.thumbnail(source, sha),
    )


@router.get("/worklist/{entry_id}/film.png")
def film_png(
    request: Request,
    entry_id: EntryId,
    reader: Reader,
    session: ReadSession,
    max_side: Annotated[int | None, Query(ge=16, le=65535)] = None,
) -> Response:
    """The film as the model was given it (8-bit grey PNG), at the display's size
    (``max_side``, rounded up to one of a few sizes) or in full."""
    source, _ = _film_source(request, session, entry_id)
    films: Films = request.app.state.films
    side = display_side(max_side)
    return _image(
        request,
        films.etag(source, "display", side),
        "image/png",
        lambda: films.display(source, side),
    )


@router.get("/worklist/{entry_id}/film.bin")
def film_values(
    request: Request, entry_id: EntryId, reader: Reader, session: ReadSession
) -> Response:
    """The stored values at full resolution, for window/level (``web.films.encode_film``)."""
    source, _ = _film_source(request, session, entry_id)
    films: Films = request.app.state.films
    plain = "gzip" not in request.headers.get("accept-encoding", "").lower()

    def make() -> bytes | None:
        data = films.film(source)  # kept gzip-compressed: every browser takes it so
        return gzip.decompress(data) if data is not None and plain else data

    response = _image(request, films.etag(source, "film", plain), "application/octet-stream", make)
    if response.status_code == status.HTTP_200_OK and not plain:
        response.headers["Content-Encoding"] = "gzip"
    response.headers["Vary"] = "Accept-Encoding"  # Cookie: the session and app add it
    return response


@router.get("/worklist/{entry_id}/heatmap.png")
def heatmap(request: Request, entry_id: EntryId, reader: Reader, session: ReadSession) -> Response:
    """The heatmap layer (RGBA PNG): Grad-CAM x P(pneumonia), viridis, one scale for all."""
    entry = get_entry(session, entry_id)
    if entry is None or entry.status is not Status.DONE or entry.probability is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "no heatmap for this row")
    films: Films = request.app.state.films
    path = films.heatmap_path(entry.file_sha256)
    if path is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "no heatmap for this row")
    sha, probability = entry.file_sha256, entry.probability
    session.close()
    return _image(
        request,
        films.etag(path, "heat", round(probability, 4)),
        "image/png",
        lambda: films.heatmap(sha, probability),
    )


#: Patient images: kept by the browser only (``private``: no proxy or shared cache), and
#: re-validated on every use (``no-cache``): the server checks the session each time, so a
#: logged-out browser never shows one from its cache, and an unchanged image costs a 304
#: without a body instead of its bytes. Every response also says ``Vary: Cookie`` (web/app.py):
#: never reused across logins.
IMAGE_CACHING = {"Cache-Control": "private, no-cache"}


def _film_source(request: Request, session: Session, entry_id: int) -> tuple[Path, str]:
    """The archived original of a scored row and its content hash (404 when there is none
    to show)."""
    entry = get_entry(session, entry_id)
    if entry is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"worklist row {entry_id} not found")
    source = (
        request.app.state.films.archived(entry.archived_path)
        if entry.status is Status.DONE
        else None
    )
    session.close()  # the connection goes back to the pool before the (slow) decode
    if source is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "no film for this row")
    return source, entry.file_sha256


def _image(
    request: Request, etag: str, media_type: str, make: Callable[[], bytes | None]
) -> Response:
    headers = {**IMAGE_CACHING, "ETag": etag}
    if request.headers.get("if-none-match") == etag:
        return Response(status_code=status.HTTP_304_NOT_MODIFIED, headers=headers)
    try:
        data = make()
    except BusyError as error:
        raise HTTPException(
            status.HTTP_503_SERVICE_UNAVAILABLE, "busy decoding films", headers={"Retry-After": "2"}
        ) from error
    if data is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "no image for this row")
    return Response(data, media_type=media_type, headers=headers)


def render(
    request: Request, template: str, context: dict[str, object], code: int = status.HTTP_200_OK
) -> Response:
    context = {
        "csrf_token": auth.csrf_token(request),
        "static_version": STATIC_VERSION,
        "now": utcnow(),
        "row_cutoffs": partial(present.row_cutoffs, card=request.app.state.card),
        **context,
    }
    return request.app.state.templates.TemplateResponse(
        request, template, context, status_code=code
    )
