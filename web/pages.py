"""The server-rendered pages: login, the worklist in reading order, one case, its review."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Form, HTTPException, Request, status
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from db.models import ReviewDecision
from db.results import objects_of, summary
from db.worklist import get_entry, next_to_read, review, review_history
from web import auth, drift
from web.database import ReadSession, WriteSession
from web.overlays import FULL_SIDE, THUMBNAIL_SIDE
from web.params import MAX_NOTE, EntryId, Filters, check_note, page_filters

router = APIRouter()

Reader = Annotated[str, Depends(auth.page_user)]


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
        accepted = auth.authenticate(request, username, password, "form")
    except auth.LoginThrottledError as error:
        response = render(
            request,
            "login.html",
            {"error": f"Too many failed logins: {error}."},
            status.HTTP_429_TOO_MANY_REQUESTS,
        )
        response.headers.update(error.retry_after_header)
        return response
    if not accepted:
        return render(
            request,
            "login.html",
            {"error": "Wrong user name or password."},
            status.HTTP_401_UNAUTHORIZED,
        )
    auth.start_session(request, username)
    return RedirectResponse("/worklist", status.HTTP_303_SEE_OTHER)


@router.post("/logout")
def logout(request: Request, csrf_token: Annotated[str, Form()] = "") -> Response:
    auth.check_csrf(request, csrf_token)
    auth.end_session(request)
    return RedirectResponse("/login", status.HTTP_303_SEE_OTHER)


@router.get("/worklist", response_class=HTMLResponse)
def worklist(
    request: Request,
    reader: Reader,
    session: ReadSession,
    chosen: Annotated[tuple[Filters, str], Depends(page_filters)],
) -> Response:
    filters, error = chosen
    rows = filters.rows(session)
    results = {
        entry_id: summary(found)
        for entry_id, found in objects_of(session, [row.id for row in rows]).items()
    }
    watch = drift.header_report(session, request.app.state.drift_reference)
    return render(
        request,
        "worklist.html",
        {
            "reader": reader,
            "rows": rows,
            "results": results,
            "filters": filters,
            "error": error,
            "drift": watch,
        },
    )


@router.get("/worklist/{entry_id}", response_class=HTMLResponse)
def case(request: Request, entry_id: EntryId, reader: Reader, session: ReadSession) -> Response:
    entry = get_entry(session, entry_id)
    if entry is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"worklist row {entry_id} not found")
    return render(
        request,
        "case.html",
        {
            "reader": reader,
            "entry": entry,
            "result_objects": objects_of(session, [entry_id]).get(entry_id, []),
            "next_entry": next_to_read(session, entry_id),
            "decisions": list(ReviewDecision),
            "reviews": review_history(session, entry_id),
        },
    )


@router.post("/worklist/{entry_id}/review")
def review_case(
    request: Request,
    entry_id: EntryId,
    reader: Reader,
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
        review(session, entry_id, decision, reader, note=cleaned)
    except LookupError as error:
        raise HTTPException(status.HTTP_404_NOT_FOUND, str(error)) from error
    following = next_to_read(session, entry_id)
    target = f"/worklist/{following.id}" if following else "/worklist"
    return RedirectResponse(target, status.HTTP_303_SEE_OTHER)


@router.get("/worklist/{entry_id}/image.png")
def image(
    request: Request, entry_id: EntryId, reader: Reader, session: ReadSession, size: str = "thumb"
) -> Response:
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
    # A radiograph is patient data: never kept in the browser's cache or a shared one.
    return Response(data, media_type="image/png", headers={"Cache-Control": "no-store"})


def render(
    request: Request, template: str, context: dict[str, object], code: int = status.HTTP_200_OK
) -> Response:
    context = {"csrf_token": auth.csrf_token(request), **context}
    return request.app.state.templates.TemplateResponse(
        request, template, context, status_code=code
    )
