"""The results' delivery loop wired from the settings (the loop itself: :mod:`pacs.delivery`).

``cxr-triage deliver`` runs it as its own process (a compose service); ``cxr-triage run``
runs it in a thread beside the watcher. Either way it is apart from the Celery worker, so
a hung PACS never holds a triage task.
"""

from __future__ import annotations

from datetime import timedelta

from pacs.delivery import Deliverer, DeliveryPolicy
from pacs.store import PacsNode
from worker.metrics import get_metrics
from worker.resources import get_session_factory
from worker.settings import Settings


def pacs_node(settings: Settings) -> PacsNode | None:
    """The configured PACS, or ``None`` when results only go to the outbox."""
    if not settings.pacs_host:
        return None
    return PacsNode(
        host=settings.pacs_host,
        port=settings.pacs_port,
        called_ae_title=settings.pacs_ae_title,
        calling_ae_title=settings.pacs_calling_ae_title,
        timeout_s=settings.pacs_timeout_s,
    )


def delivery_policy(settings: Settings) -> DeliveryPolicy:
    return DeliveryPolicy(
        batch_size=settings.results_batch_size,
        backoff_max_s=settings.results_retry_max_s,
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
