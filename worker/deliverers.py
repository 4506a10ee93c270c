"""The delivery loops wired from the settings (the loop itself: :mod:`pacs.delivery`; where
each sends: :mod:`worker.destinations`), and the optional catch-up beside it
(:mod:`pacs.catchup`).

One loop per destination, each over its own kinds of ``result_objects``: the PACS (SR, SC),
the RIS over MLLP (HL7) and the FHIR server (FHIR), so a RIS that is down never holds the
PACS's results, nor the other way round. ``cxr-triage deliver`` runs them as their own
process (a compose service); ``cxr-triage run`` runs them in threads beside the watcher
(:func:`start_pacs_threads`). Either way they are apart from the Celery worker, so a hung
PACS or RIS never holds a triage task.
"""

from __future__ import annotations

import threading
from dataclasses import replace
from datetime import timedelta

from db.models import ResultKind
from pacs.catchup import CatchUp
from pacs.delivery import Deliverer, DeliveryPolicy
from worker.destinations import fhir_node, mllp_node, pacs_node
from worker.prometheus import get_metrics
from worker.resources import get_session_factory
from worker.settings import Settings


def delivery_policy(settings: Settings) -> DeliveryPolicy:
    return DeliveryPolicy(
        batch_size=settings.results_batch_size,
        backoff_max_s=settings.results_retry_max_s,
        give_up_after=timedelta(hours=settings.results_give_up_after_h),
        claim_lease=timedelta(seconds=settings.results_claim_lease_s),
        retention=timedelta(hours=settings.results_retention_h),
    )


def build_deliverer(settings: Settings) -> Deliverer | None:
    """The delivery loop for the configured PACS; ``None`` without ``CXR_PACS_HOST``."""
    node = pacs_node(settings)
    if node is None:
        return None
    metrics = get_metrics()
    return Deliverer(
        sessions=get_session_factory(),
        node=node,
        policy=delivery_policy(settings),
        observe=lambda outcome, count: metrics.observe_pacs(outcome, count),
    )


def build_ris_deliverers(settings: Settings) -> list[Deliverer]:
    """One loop per configured RIS destination (MLLP, FHIR): the SR/SC's schedule, plus
    draining in priority order after an outage (``CXR_RIS_RECONNECT_MAX_S``)."""
    policy = replace(
        delivery_policy(settings),
        drain_in_order=True,
        reconnect_max_s=settings.ris_reconnect_max_s,
    )
    metrics = get_metrics()
    loops = []
    for kind, node in (
        (ResultKind.HL7, mllp_node(settings)),
        (ResultKind.FHIR, fhir_node(settings)),
    ):
        if node is None:
            continue
        label = kind.value
        loops.append(
            Deliverer(
                sessions=get_session_factory(),
                node=node,
                policy=policy,
                observe=lambda outcome, count, label=label: metrics.observe_ris(
                    label, outcome, count
                ),  # type: ignore[misc]
                kinds=(kind,),
            )
        )
    return loops


def build_catchup(settings: Settings) -> CatchUp | None:
    """The catch-up for the configured PACS; ``None`` when it is off (the default) or no
    PACS is configured."""
    node = pacs_node(settings)
    if node is None or settings.catchup_hours <= 0:
        return None
    return CatchUp(
        sessions=get_session_factory(),
        node=node,
        destination=settings.catchup_move_destination or settings.listen_ae_title,
        window=timedelta(hours=settings.catchup_hours),
        interval_s=settings.catchup_interval_s,
    )


def start_ris_threads(settings: Settings, stop: threading.Event) -> list[Deliverer]:
    """Start a delivery loop per configured RIS destination as daemon threads that end with
    ``stop``; returns them (none without ``CXR_RIS_HOST`` / ``CXR_FHIR_BASE_URL``)."""
    loops = build_ris_deliverers(settings)
    for loop in loops:
        name = f"results-{loop.kinds[0].value}"
        threading.Thread(target=loop.run, args=(stop,), name=name, daemon=True).start()
    return loops


def start_pacs_threads(settings: Settings, stop: threading.Event) -> Deliverer | None:
    """Start the delivery loop, and the catch-up when it is on, as daemon threads that end
    with ``stop``, and the RIS's loops (:func:`start_ris_threads`); returns the PACS's
    deliverer (``None`` without a PACS: results stay in the outbox)."""
    start_ris_threads(settings, stop)
    deliverer = build_deliverer(settings)
    if deliverer is None:
        return None
    threading.Thread(target=deliverer.run, args=(stop,), name="results", daemon=True).start()
    catchup = build_catchup(settings)
    if catchup is not None:
        threading.Thread(target=catchup.run, args=(stop,), name="catch-up", daemon=True).start()
    return deliverer
