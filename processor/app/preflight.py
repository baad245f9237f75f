"""Before a worker joins its group: the broker answers, we know what it is, our topics exist.

A worker that starts while the broker is still coming up (a compose file, a
rolling cluster restart) waits for it, saying so every few seconds, for up to
``JOURNEY_BROKER_WAIT``; then it exits non-zero with one clear line rather than
a traceback. Once connected it learns two facts that change how it runs:

* whether the broker is the embedded one (Tansu, recognised by its cluster id),
  whose ListOffsets can report a changelog's end one batch short, so Faust's
  recovery consistency check would refuse every restart (``auto`` turns the
  check off there and keeps it on against Apache Kafka);
* the broker's ``message.max.bytes``, when it reports one, so that nothing the
  worker sends can be refused for its size.

Input and output topics that do not exist yet are created here; Faust creates
its own internal topics.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass
from typing import Any

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.errors import KafkaError, TopicAlreadyExistsError

from processor.kafka_security import BrokerUnavailable, check_connection, client_kwargs
from processor.settings import Settings

__all__ = ["BrokerFacts", "BrokerUnavailable", "connect", "consistency_check", "preflight"]

log = logging.getLogger(__name__)

EMBEDDED_CLUSTER_IDS = frozenset({"tansu_cluster"})
"""Cluster ids of the embedded broker (Tansu's default, which ``journey broker`` keeps)."""

RECORD_OVERHEAD_BYTES = 1_024
"""Room left under the broker's limit for a record's key, headers and batch framing."""


@dataclass(frozen=True, slots=True)
class BrokerFacts:
    """What the worker learnt about the broker before starting."""

    cluster_id: str | None
    max_message_bytes: int
    """The largest record value the worker may send: our setting, or less if the broker says."""

    @property
    def embedded(self) -> bool:
        return self.cluster_id in EMBEDDED_CLUSTER_IDS

    @classmethod
    def unknown(cls, settings: Settings) -> BrokerFacts:
        """No broker asked (unit tests, tools): nothing embedded, our own size limit."""
        return cls(cluster_id=None, max_message_bytes=settings.max_message_bytes)


def consistency_check(settings: Settings, facts: BrokerFacts) -> bool:
    """Faust's recovery consistency check: on, off, or (auto) on unless the broker is embedded."""
    if settings.recovery_consistency_check == "auto":
        return not facts.embedded
    return settings.recovery_consistency_check == "true"


def public_topics(settings: Settings) -> list[str]:
    return [
        *settings.source_topics,
        settings.stage_changes_topic,
        settings.triggers_topic,
        settings.dead_letter_topic,
        settings.erasure_requests_topic,
        settings.erasures_topic,
        settings.identities_topic,
    ]


async def connect(settings: Settings) -> AIOKafkaAdminClient:
    """An admin client on the broker, after waiting up to ``broker_wait`` seconds for it.

    A TLS or SASL failure ends the start at once with one line
    (``KafkaConnectError``); nothing answering at all, only after the wait
    (:class:`BrokerUnavailable`).
    """
    await check_connection(settings, settings.broker_wait)
    admin = AIOKafkaAdminClient(**client_kwargs(settings))
    await admin.start()
    return admin


async def preflight(settings: Settings) -> tuple[BrokerFacts, list[str]]:
    """Wait for the broker, learn its facts, create missing topics; return facts and created."""
    admin = await connect(settings)
    try:
        cluster = await admin.describe_cluster()
        broker_limit = await _broker_message_limit(admin, cluster)
        limit = settings.max_message_bytes
        if broker_limit is not None:
            limit = min(limit, broker_limit - RECORD_OVERHEAD_BYTES)
        facts = BrokerFacts(cluster_id=cluster.get("cluster_id"), max_message_bytes=limit)
        existing = set(await admin.list_topics())
        missing = [t for t in public_topics(settings) if t not in existing]
        if missing:
            new = [NewTopic(t, settings.partitions, settings.replication_factor) for t in missing]
            with contextlib.suppress(TopicAlreadyExistsError):
                await admin.create_topics(new)
        return facts, missing
    finally:
        await admin.close()


async def _broker_message_limit(admin: AIOKafkaAdminClient, cluster: dict[str, Any]) -> int | None:
    """The broker's ``message.max.bytes``, or None if it does not say (the embedded broker)."""
    brokers = cluster.get("brokers") or []
    if not brokers:
        return None
    resource = ConfigResource(ConfigResourceType.BROKER, str(brokers[0]["node_id"]))
    try:
        responses = await admin.describe_configs([resource])
    except (KafkaError, OSError) as exc:
        log.info("the broker did not describe its configuration (%s)", exc)
        return None
    for response in responses:
        for entry in response.resources:
            for config in entry[4]:
                if config[0] == "message.max.bytes" and str(config[1]).isdigit():
                    return int(config[1])
    return None
