"""Previous and next case in reading order, for the case page and its keys.

Both come from the reading list itself (``db.reading``): the case's entry is found at its
place, and its neighbours are the entries just before and after it. A case that is no
longer on the list to read (reviewed) has no place: its "next" is the first case still to
read, as after a review.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.orm import Session

from db.reading import TO_READ, entry_position, next_to_read, reading_list
from web.live import LiveState


@dataclass(frozen=True)
class Neighbours:
    position: int | None  # the case's entry's place in the list to read (1 is first)
    total: int | None  # entries to read (the shared live count; None when unknown)
    previous: int | None  # row id of the previous entry's leading image
    next: int | None  # row id of the next entry's leading image


def neighbours(session: Session, entry_id: int, live: LiveState | None = None) -> Neighbours:
    total = sum(v for k, v in live.current().counts.items() if k != "apart") if live else None
    position = entry_position(session, entry_id)
    if position is None:
        following = next_to_read(session, entry_id)
        return Neighbours(None, total, None, following.id if following else None)
    start = max(position - 2, 0)
    found = reading_list(session, TO_READ, offset=start, limit=position + 1 - start, count=False)
    by_place = {entry.position: entry.leading.id for entry in found.entries}
    return Neighbours(position, total, by_place.get(position - 1), by_place.get(position + 1))
