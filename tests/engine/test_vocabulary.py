"""The engine's value types: the content ids every stage change and trigger carries."""

from __future__ import annotations

import uuid

from hypothesis import given
from hypothesis import strategies as st

from processor.engine.vocabulary import STAGE_CHANGE_NAMESPACE, TRIGGER_NAMESPACE, uuid5_text


@given(name=st.text(), namespace=st.sampled_from([STAGE_CHANGE_NAMESPACE, TRIGGER_NAMESPACE]))
def test_uuid5_text_is_the_standard_uuid5(name: str, namespace: uuid.UUID) -> None:
    assert uuid5_text(namespace, name) == str(uuid.uuid5(namespace, name))


@given(name=st.text(min_size=1))
def test_uuid5_text_is_a_version_5_rfc_4122_uuid(name: str) -> None:
    parsed = uuid.UUID(uuid5_text(uuid.NAMESPACE_URL, name))
    assert parsed.version == 5
    assert parsed.variant == uuid.RFC_4122
