"""The server-rendered pages: login, the worklist in reading order, one case, its review."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Form, HTTPException, Query, Request, status
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from db.models import ReviewDecision
from db.worklist import get_entry, review
from web import auth, drift
from web.overlays import FULL_SIDE, THUMBNAIL_SIDE
from web.rows import FilterError, Filters, next_to_read

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
    if not auth.credentials_match(request.app.state.config, username, password):
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
    status_: Annotated[str, Query(alias="status")] = "",
    reviewed: str = "no",
    patient_id: str = "",
    accession_number: str = "",
    since: str = "",
    limit: int = 100,
) -> Response:
    try:
        filters = Filters(status_, reviewed, patient_id, accession_number, since, limit)
        error = ""
    except FilterError as problem:
        filters, error = Filters(), str(problem)
    with request.app.state.sessions() as session:
        rows = filters.rows(session)
        watch = drift.header_report(session, request.app.state.drift_reference)
        return render(
            request,
            "worklist.html",
            {"reader": reader, "rows": rows, "filters": filters, "error": error, "drift": watch},
        )


@router.get("/worklist/{entry_id}", response_class=HTMLResponse)
def case(request: Request, entry_id: int, reader: Reader) -> Response:
    with request.app.state.sessions() as session:
        entry = get_entry(session, entry_id)
        if entry is None:
            raise HTTPException(status.HTTP_404_NOT_FOUND, f"worklist row {entry_id} not found")
        following = next_to_read(session, entry_id)
        return render(
            request,
            "case.html",
            {
                "reader": reader,
                "entry": entry,
                "next_entry": following,
                "decisions": list(ReviewDecision),
            },
        )


@router.post("/worklist/{entry_id}/review")
def review_case(
    request: Request,
    entry_id: int,
    reader: Reader,
    decision: Annotated[ReviewDecision, Form()],
    csrf_token: Annotated[str, Form()] = "",
) -> Response:
    auth.check_csrf(request, csrf_token)
    with request.app.state.sessions.begin() as session:
        try:
            review(session, entry_id, decision, reader)
        except LookupError as error:
            raise HTTPException(status.HTTP_404_NOT_FOUND, str(error)) from error
        following = next_to_read(session, entry_id)
    target = f"/worklist/{following.id}" if following else "/worklist"
    return RedirectResponse(target, status.HTTP_303_SEE_OTHER)


@router.get("/worklist/{entry_id}/image.png")
def image(request: Request, entry_id: int, reader: Reader, size: str = "thumb") -> Response:
    if size not in ("thumb", "full"):
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, "size is thumb or full")
    with request.app.state.sessions() as session:
        entry = get_entry(session, entry_id)
        if entry is None:
            raise HTTPException(status.HTTP_404_NOT_FOUND, f"worklist row {entry_id} not found")
        sha, archived = entry.file_sha256, entry.archived_path
    side = THUMBNAIL_SIDE if size == "thumb" else FULL_SIDE
    data = request.app.state.thumbnails.png(sha, archived, side)
    if data is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "no image for this row")
    return Response(data, media_type="image/png", headers={"Cache-Control": "private, max-age=300"})


def render(
    request: Request, template: str, context: dict[str, object], code: int = status.HTTP_200_OK
) -> Response:
    context = {"csrf_token": auth.csrf_token(request), **context}
    return request.app.state.templates.TemplateResponse(
        request, template, context, status_code=code
    )
