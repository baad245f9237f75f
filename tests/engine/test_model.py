"""Loading and validating journey definitions."""

from __future__ import annotations

import re
from datetime import timedelta
from pathlib import Path

import pytest

from processor.engine import (
    SOURCES,
    DefinitionError,
    FixedEvidence,
    JourneyModel,
    RelativeEvidence,
    load_model,
    parse_duration,
    parse_model,
)
from processor.engine.model import default_definition_text

DEFAULT = default_definition_text()
STAGES_LINE = next(line for line in DEFAULT.splitlines() if line.startswith("stages = "))
RETURN_LINE = next(line for line in DEFAULT.splitlines() if line.startswith("return_requested"))

MINIMAL = """\
name = "tiny"
version = "7"
stages = ["looking", "bought", "using"]
purchase_stage = "bought"
new_cycle_after = "12h"

[evidence.clickstream]
visit = "looking"
paid = "bought"

[evidence.support]
call = { before_purchase = "looking", after_purchase = "using" }
"""


def edit(old: str, new: str, text: str = DEFAULT) -> str:
    """The definition with one exact piece replaced; fails loudly if it is not there."""
    assert text.count(old) == 1, f"{old!r} not found exactly once"
    return text.replace(old, new)


def definition_error(text: str, origin: str = "defs/journey.toml") -> str:
    with pytest.raises(DefinitionError) as info:
        parse_model(text, origin=origin)
    message = str(info.value)
    assert message.startswith(f"{origin}: "), message
    return message


# --------------------------------------------------------------------------- the default


def test_default_model_loads():
    model = load_model()
    assert isinstance(model, JourneyModel)
    assert model.name == "buying-process"
    assert model.version == "1"
    assert model.label == {"name": "buying-process", "version": "1"}
    assert model.stages == (
        "need_recognition",
        "information_search",
        "evaluation",
        "purchase",
        "post_purchase",
    )
    assert model.purchase_stage == "purchase"
    assert model.purchase_rank == 3
    assert dict(model.rank) == {stage: i for i, stage in enumerate(model.stages)}
    assert model.new_cycle_after == timedelta(days=30)


def test_default_model_evidence():
    model = load_model()
    assert model.known_types("clickstream") == {
        "page_view",
        "product_view",
        "site_search",
        "add_to_wishlist",
        "add_to_cart",
        "checkout_started",
        "order_completed",
    }
    assert model.known_types("research") == {
        "search_query",
        "review_read",
        "content_download",
        "recommendation_request",
        "comparison_view",
        "pricing_view",
    }
    assert model.known_types("support") == {
        "product_question",
        "chat_started",
        "ticket_opened",
        "ticket_resolved",
        "complaint",
        "satisfaction_rating",
        "return_requested",
    }
    assert model.evidence_for("clickstream", "order_completed") == FixedEvidence("purchase")
    assert model.evidence_for("clickstream", "page_view") == FixedEvidence("need_recognition")
    assert model.evidence_for("research", "pricing_view") == FixedEvidence("evaluation")
    for event_type in model.known_types("support"):
        assert model.evidence_for("support", event_type) == RelativeEvidence(
            before_purchase="evaluation", after_purchase="post_purchase"
        )
    # Evidence is per source: a type known on one topic is unknown on another.
    assert model.evidence_for("research", "page_view") is None
    assert model.evidence_for("support", "order_completed") is None
    assert model.evidence_for("clickstream", "nonsense") is None


def test_default_model_is_the_packaged_file():
    packaged = Path(__file__).parents[2] / "processor" / "definitions" / "buying-process.toml"
    assert default_definition_text() == packaged.read_text(encoding="utf-8")
    assert load_model(packaged) == load_model()


def test_sources():
    assert SOURCES == ("clickstream", "research", "support")


def test_minimal_custom_model():
    model = parse_model(MINIMAL)
    assert model.name == "tiny"
    assert model.stages == ("looking", "bought", "using")
    assert model.purchase_rank == 1
    assert model.new_cycle_after == timedelta(hours=12)
    assert model.known_types("research") == frozenset()
    assert model.evidence_for("support", "call") == RelativeEvidence("looking", "using")


def test_triggers_must_be_an_array_of_rules():
    with pytest.raises(DefinitionError, match="triggers"):
        parse_model(MINIMAL + '\n[triggers]\nanything = "goes"\n')


# --------------------------------------------------------------------------- durations


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("90s", timedelta(seconds=90)),
        ("15m", timedelta(minutes=15)),
        ("1h", timedelta(hours=1)),
        ("30d", timedelta(days=30)),
        ("1.5h", timedelta(minutes=90)),
        ("0s", timedelta(0)),
        (" 2d ", timedelta(days=2)),
        ("7 d", timedelta(days=7)),
    ],
)
def test_parse_duration(text, expected):
    assert parse_duration(text) == expected


@pytest.mark.parametrize("text", ["", "30", "d", "30w", "-1d", "1h30m", "30D", "thirty days"])
def test_parse_duration_rejects(text):
    with pytest.raises(ValueError, match="not a duration"):
        parse_duration(text)


# --------------------------------------------------------------------------- invalid definitions


def test_definition_error_is_a_value_error():
    assert issubclass(DefinitionError, ValueError)


def test_bad_toml_names_origin_and_problem():
    message = definition_error(edit('name = "buying-process"', "name = "))
    assert "not valid TOML" in message


def test_default_origin_is_named_too():
    with pytest.raises(DefinitionError, match=r"^<string>: not valid TOML"):
        parse_model("stages = [")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param(
            edit('page_view = "need_recognition"', 'page_view = "awareness"'),
            "evidence.clickstream.page_view: 'awareness' is not one of the stages",
            id="unknown-stage-in-evidence",
        ),
        pytest.param(
            edit(
                'complaint = { before_purchase = "evaluation", after_purchase = "post_purchase" }',
                'complaint = { before_purchase = "evaluation", after_purchase = "loyalty" }',
            ),
            "evidence.support.complaint: 'loyalty' is not one of the stages",
            id="unknown-stage-in-relative-evidence",
        ),
        pytest.param(
            DEFAULT + '\n[evidence.email]\nnewsletter_opened = "need_recognition"\n',
            "evidence source 'email' is not one of ['clickstream', 'research', 'support']",
            id="unknown-source",
        ),
        pytest.param(
            edit(
                '"evaluation", "purchase", "post_purchase"]',
                '"evaluation", "purchase", "evaluation"]',
            ),
            "'stages' has duplicates",
            id="duplicate-stages",
        ),
        pytest.param(
            edit('purchase_stage = "purchase"', 'purchase_stage = "checkout"'),
            "'purchase_stage' 'checkout' is not one of the stages",
            id="purchase-stage-not-a-stage",
        ),
        pytest.param(
            edit('name = "buying-process"\n', ""),
            "missing required key 'name'",
            id="missing-name",
        ),
        pytest.param(
            edit('version = "1"\n', ""),
            "missing required key 'version'",
            id="missing-version",
        ),
        pytest.param(
            edit('name = "buying-process"', 'name = "  "'),
            "'name' must be a non-empty string",
            id="blank-name",
        ),
        pytest.param(
            edit('version = "1"', "version = 1"),
            "'version' must be a non-empty string, not 1",
            id="version-not-a-string",
        ),
        pytest.param(
            edit('new_cycle_after = "30d"', 'new_cycle_after = "30 days"'),
            "not a duration: '30 days'",
            id="bad-duration",
        ),
        pytest.param(
            edit('new_cycle_after = "30d"\n', ""),
            "missing required key 'new_cycle_after'",
            id="missing-duration",
        ),
        pytest.param(
            edit('order_completed = "purchase"\n', ""),
            "no event type is evidence of the purchase stage 'purchase'",
            id="no-purchase-evidence",
        ),
        pytest.param(
            edit(
                RETURN_LINE,
                'return_requested = { before_purchase = "evaluation" }',
            ),
            "evidence.support.return_requested: expected { before_purchase = ..., after_purchase",
            id="relative-evidence-incomplete",
        ),
        pytest.param(
            edit(
                RETURN_LINE,
                'return_requested = { before = "evaluation", after_purchase = "post_purchase" }',
            ),
            "evidence.support.return_requested: expected {",
            id="relative-evidence-wrong-key",
        ),
        pytest.param(
            edit('page_view = "need_recognition"', "page_view = 1"),
            "evidence.clickstream.page_view: expected a stage name or a relative table",
            id="evidence-not-a-stage",
        ),
        pytest.param(
            edit('version = "1"', 'version = "1"\nstagse = []'),
            "unknown top-level keys ['stagse']",
            id="unknown-top-level-key",
        ),
        pytest.param(
            edit(
                STAGES_LINE,
                "stages = []",
            ),
            "'stages' must be a non-empty list of stage names",
            id="no-stages",
        ),
        pytest.param(
            edit(
                STAGES_LINE,
                'stages = "purchase"',
            ),
            "'stages' must be a non-empty list of stage names",
            id="stages-not-a-list",
        ),
        pytest.param(
            MINIMAL.split("[evidence")[0],
            "'evidence' must be a table of sources",
            id="no-evidence",
        ),
        pytest.param(
            MINIMAL.split("[evidence")[0] + '[evidence]\nclickstream = "paid"\n',
            "[evidence.clickstream] must map event types to stages",
            id="source-not-a-table",
        ),
    ],
)
def test_invalid_definition_names_origin_and_problem(text, expected):
    message = definition_error(text)
    assert expected in message


# --------------------------------------------------------------------------- load_model(path)


def test_load_model_from_a_file(tmp_path):
    path = tmp_path / "journey.toml"
    path.write_text(MINIMAL, encoding="utf-8")
    assert load_model(path) == parse_model(MINIMAL)
    assert load_model(str(path)) == parse_model(MINIMAL)


def test_load_model_invalid_file_names_the_path(tmp_path):
    path = tmp_path / "broken.toml"
    path.write_text(edit('paid = "bought"', 'paid = "sold"', MINIMAL), encoding="utf-8")
    with pytest.raises(DefinitionError) as info:
        load_model(path)
    message = str(info.value)
    assert message.startswith(f"{path}: ")
    assert "evidence.clickstream.paid: 'sold' is not one of the stages" in message


def test_load_model_bad_toml_file_names_the_path(tmp_path):
    path = tmp_path / "broken.toml"
    path.write_text("name = [", encoding="utf-8")
    with pytest.raises(DefinitionError, match=rf"^{re.escape(str(path))}: not valid TOML"):
        load_model(path)


def test_load_model_missing_file(tmp_path):
    path = tmp_path / "nowhere" / "journey.toml"
    with pytest.raises(DefinitionError) as info:
        load_model(path)
    message = str(info.value)
    assert message.startswith(f"{path}: cannot read the journey definition")
    assert isinstance(info.value.__cause__, OSError)


def test_load_model_directory_is_unreadable(tmp_path):
    with pytest.raises(DefinitionError, match="cannot read the journey definition"):
        load_model(tmp_path)


def test_load_model_non_utf8_file_raises_definition_error(tmp_path):
    path = tmp_path / "latin1.toml"
    path.write_bytes(MINIMAL.replace('"tiny"', '"caf\u00e9"').encode("latin-1"))
    with pytest.raises(DefinitionError) as info:
        load_model(path)
    assert str(info.value).startswith(f"{path}: ")
