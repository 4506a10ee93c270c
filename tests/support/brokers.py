"""Reading what waits on a broker, the same way on Redis and RabbitMQ (kombu's basic_get)."""

from __future__ import annotations

from collections.abc import Sequence

from kombu import Connection, Queue

from worker.broker import queue_depths


def take_task_args(url: str, queues: Sequence[str]) -> list[list[int]]:
    """Take every task message waiting on ``queues`` (acknowledged: they are gone after)
    and return each one's first argument, the row ids of its batch."""
    taken: list[list[int]] = []
    with Connection(url) as connection:
        present = [name for name, depth in queue_depths(connection, queues).items() if depth]
        channel = connection.channel()
        for name in present:
            queue = Queue(name, no_declare=True)(channel)
            while (message := queue.get()) is not None:
                args, _kwargs, _embed = message.decode()
                taken.append(list(args[0]))
                message.ack()
    return taken


def peek_tasks(url: str, queue: str) -> list[tuple[dict[str, object], list[int]]]:
    """The task messages waiting on ``queue``, oldest first, as (headers, first argument),
    left on the broker: each is taken unacknowledged, and all are requeued at the end."""
    found: list[tuple[dict[str, object], list[int]]] = []
    with Connection(url) as connection:
        if not queue_depths(connection, [queue])[queue]:
            return found
        channel = connection.channel()
        bound = Queue(queue, no_declare=True)(channel)
        held = []
        while (message := bound.get()) is not None:
            held.append(message)
            args, _kwargs, _embed = message.decode()
            found.append((dict(message.headers), list(args[0])))
        for message in held:
            message.requeue()
    return found
