"""The journey command: help, definition errors, and planning a JSON-lines file."""

from __future__ import annotations

import contextlib
import io
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from processor.cli import build_parser
from processor.cli.io import plan_lines
from processor.engine import load_model
from processor.settings import Settings


@pytest.mark.parametrize("command", ["worker", "broker", "produce", "tail", "forget", "demo"])
def test_every_command_documents_the_settings(command: str) -> None:
    parser = build_parser()
    sub = parser._subparsers._group_actions[0].choices[command]  # type: ignore[union-attr]
    text = sub.format_help()
    assert "JOURNEY_BROKER_URL" in text
    assert "--broker-url" in text


def test_invalid_definition_stops_the_worker_naming_file_and_problem(tmp_path: Path) -> None:
    bad = tmp_path / "journey.toml"
    bad.write_text('name = "x"\nversion = "1"\nstages = ["a", "a"]\n')
    result = subprocess.run(
        [sys.executable, "-m", "processor", "worker", "--definition", str(bad)],
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": "/usr/bin:/bin", "JOURNEY_BROKER_URL": "kafka://127.0.0.1:1"},
    )
    assert result.returncode == 2
    assert str(bad) in result.stderr
    assert "duplicates" in result.stderr


def test_produce_routes_lines_by_source_or_type() -> None:
    settings = Settings()
    lines = [
        orjson.dumps({"event_id": "1", "customer_id": "c", "type": "page_view"}).decode(),
        orjson.dumps({"event_id": "2", "customer_id": "c", "type": "review_read"}).decode(),
        orjson.dumps({"event_id": "3", "customer_id": "c", "type": "complaint"}).decode(),
        orjson.dumps({"event_id": "4", "type": "mystery", "source": "support"}).decode(),
        "",
    ]
    records, problems = plan_lines(lines, settings, load_model())
    assert problems == []
    assert [(t, k) for t, k, _ in records] == [
        ("journey.clickstream", b"c"),
        ("journey.research", b"c"),
        ("journey.support", b"c"),
        ("journey.support", None),
    ]
    assert records[0][2] == lines[0].encode()


def test_produce_reports_lines_it_cannot_place() -> None:
    records, problems = plan_lines(
        ["{oops", "[1]", '{"type": "mystery"}'], Settings(), load_model()
    )
    assert records == []
    assert [p.split(":")[0] for p in problems] == ["line 1", "line 2", "line 3"]


def test_forget_needs_an_id_and_documents_the_confirmation() -> None:
    parser = build_parser()
    sub = parser._subparsers._group_actions[0].choices["forget"]  # type: ignore[union-attr]
    text = sub.format_help()
    assert "--request-id" in text and "erasures topic" in text
    with pytest.raises(SystemExit):
        parser.parse_args(["forget"])
    args = parser.parse_args(["forget", "alice", "bob"])
    assert args.customer_ids == ["alice", "bob"]


def test_forget_refuses_one_request_id_for_several_customers() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "processor", "forget", "--request-id", "r", "a", "b"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2 and "one ID" in result.stderr


def test_forget_refuses_ids_the_workers_would_dead_letter() -> None:
    from processor.cli.io import forget_customers

    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        code = forget_customers(["x" * 300], None, Settings(), io.StringIO())
    assert code == 2 and "JOURNEY_MAX_ID_LENGTH" in err.getvalue()
