"""The admin role's part of the API: who has an account, and the audit trail.

Read-only on purpose: accounts are created and changed with ``cxr-triage user`` by whoever
holds the database owner's login, so the web's own database login never needs to write a
password hash or a role (a compromised page cannot make itself an admin).
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Query, status
from pydantic import BaseModel, ConfigDict

from db import accounts
from db.models import AuditKind, Role
from db.worklist import parse_when
from web import auth
from web.database import ReadSession

router = APIRouter(prefix="/api")
Admin = Annotated[auth.Person, Depends(auth.api_admin)]


class AccountRow(BaseModel):
    model_config = ConfigDict(frozen=True, from_attributes=True)

    id: int
    name: str
    role: Role
    disabled: bool
    created_at: datetime
    password_changed_at: datetime | None
    last_login_at: datetime | None
    failed_logins: int
    locked_until: datetime | None


class AuditRow(BaseModel):
    model_config = ConfigDict(frozen=True, from_attributes=True)

    id: int
    at: datetime
    event: AuditKind
    account_id: int | None
    actor: str
    via: str
    client: str | None
    worklist_id: int | None
    detail: str | None


@router.get("/accounts")
def account_list(admin: Admin, session: ReadSession) -> list[AccountRow]:
    """Every account, enabled or not (no password hashes)."""
    return [AccountRow.model_validate(a) for a in accounts.all_accounts(session)]


@router.get("/audit")
def audit(
    admin: Admin,
    session: ReadSession,
    since: Annotated[str, Query(max_length=40)] = "",
    account: Annotated[str, Query(max_length=64)] = "",
    limit: Annotated[int, Query(ge=1, le=1000)] = 200,
) -> list[AuditRow]:
    """Audit events, newest first: ``since`` (``24h``, ``7d`` or a date), ``account`` (a name)."""
    try:
        start = parse_when(since) if since.strip() else None
    except ValueError as error:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, str(error)) from error
    account_id = None
    if account:
        found = accounts.find(session, account)
        if found is None:
            return []
        account_id = found.id
    events = accounts.audit_trail(session, since=start, account_id=account_id, limit=limit)
    return [AuditRow.model_validate(e) for e in events]
