"""The frame fuzz target (fuzz/fuzz_frames.py) in CI: briefly under atheris when it is installed,
always under Hypothesis, plus a regression test for each bug the fuzzer found.

Run the target for long by hand: ``.venv/bin/python fuzz/fuzz_frames.py -max_total_time=3600 fuzz/corpus``.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from redline import canonical
from redline.protocol.events import Close, Send
from redline.protocol.framing import FrameDecoder, FrameType, encode_frame

TARGET = Path(__file__).resolve().parent.parent / "fuzz" / "fuzz_frames.py"
_spec = importlib.util.spec_from_file_location("fuzz_frames", TARGET)
assert _spec is not None and _spec.loader is not None
fuzz_frames = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(fuzz_frames)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=4096))
def test_decoder_and_link_hold_their_invariants_on_any_bytes(data: bytes) -> None:
    fuzz_frames.one_input(data)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(list(FrameType)), st.binary(max_size=300)), max_size=8), st.data())
def test_link_after_a_valid_hello_holds_its_invariants(
    frames: list[tuple[FrameType, bytes]], data: st.DataObject
) -> None:
    stream = fuzz_frames._hello() + b"".join(encode_frame(t, p) for t, p in frames)
    cuts = sorted(data.draw(st.sets(st.integers(0, len(stream)), max_size=5)))
    fuzz_frames.check_decoder(stream, cuts)
    fuzz_frames.check_link(stream, cuts, fuzz_frames.Source(b""))


def test_atheris_runs_the_target_briefly(tmp_path: Path) -> None:
    if importlib.util.find_spec("atheris") is None:
        pytest.skip("atheris is not installed (pip install atheris); the Hypothesis tests above run the same target")
    out = subprocess.run(
        [sys.executable, str(TARGET), "-runs=2000", "-timeout=10", "-seed=1"],
        cwd=tmp_path, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    crashes = [p.name for p in tmp_path.glob("crash-*")]
    assert out.returncode == 0 and not crashes, f"{crashes}\n{out.stderr[-3000:]}"
    assert "Done 2000 runs" in out.stderr


@pytest.mark.parametrize("versions", [[{}], [[1]], [1, {"v": 1}]])
def test_hello_whose_versions_are_not_numbers_is_a_protocol_error_not_a_crash(versions: list[object]) -> None:
    link = fuzz_frames.Link(
        line=fuzz_frames.LINE, us=fuzz_frames.US, peer=fuzz_frames.PEER, limits=fuzz_frames.LIMITS,
        our_head=fuzz_frames.ChainHead(seq=0, id=None), their_head=fuzz_frames.ChainHead(seq=0, id=None),
        active=True, confirmed=True,
    )  # fmt: skip
    link.path_up("p", 0.0, 0)
    hello = {
        "versions": versions, "line": fuzz_frames.LINE, "station": fuzz_frames.PEER, "mine": {"seq": 0, "id": None},
        "yours": {"seq": 0, "id": None}, "time": 1, "confirmed": True,
    }  # fmt: skip
    out = link.receive("p", encode_frame(FrameType.HELLO, canonical.encode(hello)), 0.0, 0)
    assert any(isinstance(o, Close) for o in out)
    errors = [FrameDecoder(1 << 20).feed(o.data)[0] for o in out if isinstance(o, Send)]
    assert [t for t, _ in errors] == [FrameType.ERROR]
