"""The embedded broker with Redis's queue order: queues polled in the order consumed.

Kombu's filesystem transport (the broker of ``cxr-triage run``) polls its queues round
robin, so a worker alternates one-for-one between triage and results tasks, and a live
arrival waits behind backfill tasks. Redis is told ``queue_order_strategy='priority'``;
this transport is the same rule for the filesystem broker: every poll starts again at the
first queue of ``--queues`` (``cxr.live``, ``cxr.backfill``, ``cxr.results``), so the
Grad-CAM/SR/SC results run only once no triage work waits, on every broker.

Its folders (queue, control, processed, under ``<data_dir>/broker``) are made when a channel
opens: kombu's transport expects them to exist, and the configuration must not make them
(building it at import would touch the file system in every process that imports the app).
"""

from __future__ import annotations

from pathlib import Path
from queue import Empty
from typing import Any

from kombu.transport import filesystem
from kombu.utils.scheduling import FairCycle


class InOrderCycle(FairCycle):
    """A cycle that tries the queues from the first every time: the first non-empty wins."""

    def get(self, callback: Any, **kwargs: Any) -> Any:
        self.pos = 0
        return super().get(callback, **kwargs)


class Channel(filesystem.Channel):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # Made on connecting, by whichever process connects first (the watcher sending or the
        # worker consuming), never while the configuration is built at import.
        for folder in (
            self.data_folder_in,
            self.data_folder_out,
            self.control_folder,
            self.processed_folder,
        ):
            Path(folder).mkdir(parents=True, exist_ok=True)

    def _reset_cycle(self) -> None:
        self._cycle = InOrderCycle(self._get_and_deliver, self._active_queues, Empty)


class Transport(filesystem.Transport):
    """``filesystem://`` with in-order polling; selected by ``broker_transport``."""

    Channel = Channel


#: The value of Celery's ``broker_transport`` for the embedded broker.
TRANSPORT = f"{__name__}:Transport"
