"""Send ORU^R01 messages to the RIS over MLLP, one connection per batch, with the ``hl7``
library's asyncio streams (MLLP framing ``<VT> message <FS><CR>`` both ways).

Original-mode acknowledgement: one message at a time, each waiting for its ACK (at most
``ack_timeout_s``) before the next, in the batch's order (urgent first). What each ACK means
is :mod:`ris.acks`'s rule. A message without a good answer (timeout, connection closed, an
answer that is not its ACK) ends the connection: its state is unknown, it is retried under
the same MSH-10 (a RIS that keeps control ids discards the duplicate), and the rest of the
batch comes back ``unsent``. MLLP has no TLS: README "RIS hardening" says how sites tunnel it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from hl7.mllp import HL7StreamReader, HL7StreamWriter, open_hl7_connection

from pacs.statuses import Outcome, Verdict
from pacs.store import BatchResult, Outgoing, Refused, Stored, StoreError, read_each
from ris.acks import AckError, classify, read_ack
from ris.hl7v2 import CHARSETS, MessageError, read_message

log = logging.getLogger(__name__)
MAX_ACK_BYTES = 1 << 20  # an ACK is a few hundred bytes; a megabyte is not an ACK


@dataclass(frozen=True)
class MllpNode:
    """The RIS's (or interface engine's) MLLP listener."""

    host: str
    port: int
    charset: str = "UNICODE UTF-8"  # MSH-18 of our messages: how files and ACKs decode
    connect_timeout_s: float = 10.0
    ack_timeout_s: float = 30.0

    def __post_init__(self) -> None:
        if not 0 < self.port < 65536:
            raise ValueError(f"port {self.port} is out of range")
        if self.charset not in CHARSETS:
            raise ValueError(f"charset must be one of {', '.join(CHARSETS)}")
        if self.connect_timeout_s <= 0 or self.ack_timeout_s <= 0:
            raise ValueError("timeouts must be positive")

    def __str__(self) -> str:
        return f"RIS MLLP {self.host}:{self.port}"

    @property
    def codec(self) -> str:
        return CHARSETS[self.charset]

    def _checked_message(self, item: Outgoing) -> bytes:
        """The message's bytes, once the sender's parser has read them as its row's."""
        data = item.path.read_bytes()
        read_message(data, self.codec, item.sop_instance_uid)
        return data

    def send_batch(self, items: Sequence[Outgoing]) -> BatchResult:
        """Send each readable item over one connection, in order (:class:`pacs.delivery.
        Destination`). Raises :class:`StoreError` when the RIS cannot be reached."""
        result = BatchResult()
        messages = read_each(items, self._checked_message, result, (MessageError,))
        if messages:
            try:
                asyncio.run(self._send(messages, result))
            except _LostError as lost:  # reconnecting mid-batch failed: the rest is unsent
                done = {r.path for r in result.stored} | {r.path for r in result.refused}
                result.unsent.extend(i.path for i, _ in messages if i.path not in done)
                log.warning("%s", lost)
            log.info("sent %d message(s) to %s", len(result.stored), self)
        return result

    async def _connect(self) -> tuple[HL7StreamReader, HL7StreamWriter]:
        try:
            return await asyncio.wait_for(
                open_hl7_connection(self.host, self.port, encoding=self.codec, limit=MAX_ACK_BYTES),
                self.connect_timeout_s,
            )
        except TimeoutError as error:
            raise StoreError(
                f"{self}: no connection within {self.connect_timeout_s:g} s"
            ) from error
        except OSError as error:
            reason = error.strerror or type(error).__name__
            raise StoreError(f"{self}: unreachable ({reason})") from error

    async def _send(self, messages: list[tuple[Outgoing, bytes]], result: BatchResult) -> None:
        reader, writer = await self._connect()
        carried = 0  # messages acknowledged on this connection
        try:
            for index, (item, data) in enumerate(messages):
                verdict, broken = await self._exchange(reader, writer, item, data)
                if broken is _CLOSED_UNREAD and carried:
                    # Some engines close the connection after each ACK: a fresh connection
                    # for the rest of the batch, this message sent again on it (same MSH-10).
                    await _close(writer)
                    reader, writer = await self._reconnect()
                    carried = 0
                    verdict, broken = await self._exchange(reader, writer, item, data)
                if verdict.outcome is Outcome.STORED:
                    result.stored.append(Stored(item.path, item.sop_instance_uid or "", 0))
                    carried += 1
                else:
                    result.refused.append(Refused(item.path, None, verdict))
                if broken:
                    result.unsent.extend(later.path for later, _ in messages[index + 1 :])
                    return
        finally:
            await _close(writer)

    async def _reconnect(self) -> tuple[HL7StreamReader, HL7StreamWriter]:
        try:
            return await self._connect()
        except StoreError as error:  # the rest of the batch waits for the next pass
            raise _LostError(str(error)) from error

    async def _exchange(
        self, reader: HL7StreamReader, writer: HL7StreamWriter, item: Outgoing, data: bytes
    ) -> tuple[Verdict, object]:
        """Send one message and read its ACK: (what it means, whether the connection is
        broken: a false value, ``True``, or :data:`_CLOSED_UNREAD` when the peer closed it
        without a byte of answer)."""
        started = time.monotonic()
        try:
            writer.writeblock(data)
            await writer.drain()
            block = await asyncio.wait_for(reader.readblock(), self.ack_timeout_s)
        except TimeoutError:
            words = f"no ACK within {self.ack_timeout_s:g} s (CXR_RIS_ACK_TIMEOUT_S); retried"
            return Verdict(Outcome.TEMPORARY, words), True
        except (asyncio.IncompleteReadError, ConnectionError) as error:
            words = f"the RIS closed the connection before its ACK ({type(error).__name__})"
            partial = getattr(error, "partial", b"")
            return Verdict(Outcome.TEMPORARY, words), True if partial else _CLOSED_UNREAD
        except (ValueError, OSError) as error:  # over the limit, no start block, socket error
            words = f"the answer is not an MLLP block ({type(error).__name__})"
            return Verdict(Outcome.TEMPORARY, words), True
        try:
            code, error_code = read_ack(
                block.decode(self.codec, "replace"), item.sop_instance_uid or ""
            )
        except AckError as error:
            return Verdict(Outcome.TEMPORARY, f"{error}; retried"), True
        verdict = classify(code, error_code)
        log.debug(
            "%s: message %s answered %s in %.3f s",
            self,
            _name(item.path),
            code,
            time.monotonic() - started,
        )
        return verdict, False


#: ``_exchange``'s "broken" when the peer closed the connection without answering at all.
_CLOSED_UNREAD = "closed"


class _LostError(Exception):
    """The connection was lost mid-batch and could not be made again."""


async def _close(writer: HL7StreamWriter) -> None:
    writer.close()
    with contextlib.suppress(Exception):  # a peer that reset: closed all the same
        await asyncio.wait_for(writer.wait_closed(), 5)


def _name(path: Path) -> str:
    """A message file's name: its control id, no patient data."""
    return path.name


def probe(node: MllpNode) -> float:
    """Open and close one MLLP connection (``ris-echo``); returns the seconds it took.
    Raises :class:`StoreError`. No message is sent: a RIS must not receive test data."""

    async def connect() -> float:
        started = time.monotonic()
        _, writer = await node._connect()
        writer.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(writer.wait_closed(), 5)
        return time.monotonic() - started

    return asyncio.run(connect())
