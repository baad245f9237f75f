"""The benchmark's table and changelog readers, without a broker (the bench code must not rot)."""

from __future__ import annotations

from base64 import b64encode

import orjson

from bench.harness.offsets import decode_states
from bench.harness.results import Row, table
from bench.rows.quix import quix_states
from processor.contracts.state import encode_state
from processor.engine import apply, load_model
from tests.engine.events import ev


def customer_state(customer: str):  # type: ignore[no-untyped-def]
    step = apply(None, ev("add_to_cart", customer=customer), load_model())
    assert step.state is not None
    return step.state


def test_every_row_is_a_ratio_to_the_aiokafka_row_and_to_the_noop_row() -> None:
    plain = Row("A aiokafka consumer + orjson", 1000, 0.1)  # 10,000/s
    noop = Row("B Faust no-op agent", 1000, 0.5, low=0.4, high=0.5)  # 2,000/s
    worker = Row("processor end to end", 1000, 1.0, low=0.8, high=1.0, exact=0.9)
    lines = table([plain, noop, worker], plain, noop).splitlines()
    assert "vs aiokafka" in lines[0] and "vs no-op" in lines[0]
    row = next(line for line in lines if line.startswith("processor end to end"))
    assert "0.100x" in row  # 1,000/s against 10,000/s
    assert "0.500x" in row  # against the no-op row's 2,000/s
    assert "1,000..1,250" in row  # the commit bracket
    assert "1,111" in row and "0.111x" in row  # exact end, against aiokafka
    dnf = table([Row("X", 10, None, note="DNF")], plain, noop).splitlines()[-1]
    assert "DNF" in dnf and "x" not in dnf.split("DNF")[0].split()[-1]


def test_final_states_skip_markers_and_measure_encoded_sizes() -> None:
    state = customer_state("c-1")
    raw = encode_state(state)
    final = decode_states({b"c-1": raw, b"marker": b"not a state", b"gone": None})
    assert list(final.states) == ["c-1"]
    assert final.sizes == [len(raw)]
    assert f"max {len(raw):,} B over 1 customers" in final.size_summary()


def test_quix_changelog_keys_are_prefixed_and_values_json_strings() -> None:
    raw = encode_state(customer_state("c-2"))
    latest = {
        b'c-2|"s"': orjson.dumps(b64encode(raw).decode()),
        b'c-2|"c0"': orjson.dumps(b64encode(b'["e1"]').decode()),
    }
    final = quix_states(latest)
    assert list(final.states) == ["c-2"]
    assert final.states["c-2"].customer_id == "c-2"


def test_the_peer_comparison_gives_each_end_as_a_ratio() -> None:
    from bench.run import peer_comparison

    peer = Row("Quix Streams + this engine", 1000, 2.0, exact=2.0, work=2.0)  # 500/s
    ours = Row("processor end to end", 1000, 1.6, exact=0.5, work=1.0)
    lines = peer_comparison(ours, None, peer).splitlines()
    assert lines[1].strip() == (
        "processor end to end: headline 1.25x, work committed 2.00x, exact end 4.00x"
    )
    unknown = Row("processor, holding off", 1000, None)
    assert "headline -, work committed -, exact end -" in peer_comparison(ours, unknown, peer)
