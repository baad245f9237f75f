"""Creating the processor's topics before the worker joins its group.

Input topics may already exist with any partition count (someone else owns
them); the processor only creates what is missing. Faust creates its own
internal topics (the changelogs and the repartition topic) with
``Settings.partitions``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaConnectionError, TopicAlreadyExistsError

from processor.kafka_security import check_connection, client_kwargs
from processor.settings import Settings

log = logging.getLogger(__name__)


def public_topics(settings: Settings) -> list[str]:
    return [
        *settings.source_topics,
        settings.stage_changes_topic,
        settings.triggers_topic,
        settings.dead_letter_topic,
    ]


async def ensure_topics(settings: Settings, wait_seconds: float = 60.0) -> list[str]:
    """Create the input and output topics that do not exist yet; return the ones created.

    Connects once first (:func:`check_connection`): a TLS or SASL failure ends the
    start with one line instead of a minute of retries.
    """
    await check_connection(settings, wait_seconds)
    admin = AIOKafkaAdminClient(**client_kwargs(settings))
    deadline = asyncio.get_running_loop().time() + wait_seconds
    while True:
        try:
            await admin.start()
            break
        except KafkaConnectionError:
            if asyncio.get_running_loop().time() > deadline:
                raise
            log.info("waiting for the broker at %s", settings.bootstrap_servers)
            await asyncio.sleep(1.0)
    try:
        existing = set(await admin.list_topics())
        missing = [t for t in public_topics(settings) if t not in existing]
        if missing:
            new = [NewTopic(t, settings.partitions, settings.replication_factor) for t in missing]
            with contextlib.suppress(TopicAlreadyExistsError):
                await admin.create_topics(new)
        return missing
    finally:
        await admin.close()
