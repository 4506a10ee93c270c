"""What the code asks the broker besides sending tasks: which kind it is, and how many
messages wait in a queue.

Three brokers are supported, chosen by ``CXR_BROKER_URL``:

- ``filesystem://`` (the default): the embedded broker of ``cxr-triage run``, one machine;
- ``redis://`` / ``rediss://``: one Redis, queues polled in order (``queue_order_strategy``);
- ``amqp://`` / ``amqps://`` / ``pyamqp://``: RabbitMQ, every queue a durable **quorum
  queue** (replicated by Raft on a cluster, on disk on one node) and every publish confirmed
  by the broker (``confirm_publish``), so a task the watcher was told is sent survives a
  broker crash. See :mod:`worker.celery_app` for the queue order on each.

Queue depth. Kombu's passive ``queue_declare`` reports the messages *ready* in a queue on
every transport (those a worker holds unacknowledged are not counted: they are being
worked on). On AMQP a passive declare of a queue that does not exist yet is a channel
error that closes the channel, so each question there gets a channel of its own: the
connection's default channel is the one its producers publish on and must never be broken.
"""

from __future__ import annotations

from collections.abc import Iterable
from enum import StrEnum
from typing import Any

from kombu.exceptions import ChannelError


class BrokerKind(StrEnum):
    FILESYSTEM = "filesystem"
    REDIS = "redis"
    AMQP = "amqp"
    OTHER = "other"


AMQP_SCHEMES = ("amqp://", "amqps://", "pyamqp://")
REDIS_SCHEMES = ("redis://", "rediss://")


def broker_kind(url: str) -> BrokerKind:
    """Which broker a ``CXR_BROKER_URL`` names."""
    if url.startswith("filesystem://"):
        return BrokerKind.FILESYSTEM
    if url.startswith(REDIS_SCHEMES):
        return BrokerKind.REDIS
    if url.startswith(AMQP_SCHEMES):
        return BrokerKind.AMQP
    return BrokerKind.OTHER


def queue_depths(connection: Any, names: Iterable[str]) -> dict[str, int]:
    """Messages ready in each of ``names`` (0 for a queue never declared).

    ``connection`` is a connected :class:`kombu.Connection`; its errors (broker down)
    propagate to the caller, which decides what an unknown depth means.
    """
    amqp = connection.transport.driver_type == "amqp"
    depths: dict[str, int] = {}
    for name in names:
        channel = connection.channel() if amqp else connection.default_channel
        try:
            depths[name] = int(channel.queue_declare(queue=name, passive=True).message_count)
        except ChannelError:  # not declared yet: nothing was ever sent to it
            depths[name] = 0
        finally:
            if amqp:
                _close_quietly(channel)
    return depths


def any_waiting(connection: Any, names: Iterable[str]) -> bool:
    """Does any of ``names`` hold a ready message? Stops at the first that does."""
    return any(queue_depths(connection, [name])[name] for name in names)


def _close_quietly(channel: Any) -> None:
    try:
        channel.close()
    except Exception:  # a channel the server closed already (404): nothing to release  # noqa: BLE001
        return
