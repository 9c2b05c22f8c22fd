"""An envelope is at most 1 MiB (PROTOCOL.md 5.4, ``config.MAX_ENVELOPE_BYTES``): a station's size
limits may only be lower.

``redline verify`` and a bundle's reader refuse a longer envelope as "edited, forged or
corrupted". ``max_frame_bytes`` and ``max_body_bytes`` were settings without an upper bound, so two
stations whose operators raised them signed and co-signed 1.2 MB messages, and every verifier,
theirs included, called the honest transcript forged: a verdict a local file decided. Now a limit
above the protocol's is refused at start, and the widest a station can be set signs nothing a
verifier refuses. Transcripts are real (SessionPair: sessions, stores, signatures)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from redline import envelope, gate
from redline.bundle import build_bundle, verify_bundle
from redline.config import ENVELOPE_HEADROOM, MAX_ENVELOPE_BYTES, Limits, StationConfig
from redline.errors import ConfigError, LocalProtocolError
from redline.ledger.verify import verify_line
from redline.testing import SessionPair
from tests.test_keys import roots

RAISED: list[dict[str, Any]] = [
    {"max_body_bytes": 3 << 20, "max_frame_bytes": 4 << 20},  # what a site sending large files might write
    {"max_frame_bytes": MAX_ENVELOPE_BYTES + 1},
    {"max_body_bytes": MAX_ENVELOPE_BYTES - ENVELOPE_HEADROOM + 1, "max_frame_bytes": MAX_ENVELOPE_BYTES},
]


def verdicts(sp: SessionPair) -> list[bool]:
    """Whether verify (on either store) and a bundle's reader accept the line."""
    out = [verify_line(led.line_data(sp.line, name), roots(sp)).ok
           for led, name in ((sp.a.ledger, "EUCOM"), (sp.b.ledger, "NDMC"))]  # fmt: skip
    data = sp.a.ledger.line_data(sp.line, "EUCOM")
    out.append(verify_bundle(build_bundle(data, roots(sp), sp.a.us, exported_at=sp.clock.wall), sorted(roots(sp))).ok)
    return out


def largest_text(sp: SessionPair, limits: Limits) -> int:
    """EUCOM sends the longest text its limits take; its length."""
    for n in range(limits.max_body_bytes, limits.max_body_bytes - 64, -1):
        try:
            sp.send("a", "x" * n)
        except LocalProtocolError:
            continue
        sp.run()
        sp.send("b", "received")  # NDMC signs after it: the long one is co-signed, not a one-sided tail
        sp.run()
        return n
    raise AssertionError("no text near max_body_bytes was taken")


def test_stations_that_raise_their_size_limits_cannot_co_sign_what_verify_calls_forged(tmp_path: Path) -> None:
    refused = []
    for i, raised in enumerate(RAISED):
        obj = {"name": "EUCOM", "lang": "en", "listen": ["127.0.0.1:7401"], "limits": raised}
        try:
            limits = StationConfig.from_obj(obj).limits
        except ConfigError as exc:
            assert "may be at most" in str(exc) and "PROTOCOL.md 5.4" in str(exc) and "\n" not in str(exc)
            refused.append(i)
            continue
        sp = SessionPair(tmp_path / str(i), limits=limits)  # both stations set alike: the line works
        try:
            sp.run()
            sent = largest_text(sp, limits)
            assert verdicts(sp) == [True, True, True], f"{raised}: a {sent}-byte text co-signed, refused by verify"
        finally:
            sp.close()
    assert refused == [0, 1, 2]


def test_the_widest_limits_a_station_may_set_sign_only_what_every_verifier_accepts(tmp_path: Path) -> None:
    widest = Limits(max_body_bytes=MAX_ENVELOPE_BYTES - ENVELOPE_HEADROOM, max_frame_bytes=MAX_ENVELOPE_BYTES)
    sp = SessionPair(tmp_path, limits=widest)
    try:
        sp.run()
        largest_text(sp, widest)
        seq, _ = sp.a.ledger.head(sp.line, sp.a.us)
        [row] = [r for r in sp.a.ledger.line_data(sp.line, "EUCOM").chain(sp.a.us) if r.seq == seq]
        assert MAX_ENVELOPE_BYTES - ENVELOPE_HEADROOM < len(row.raw or b"") <= MAX_ENVELOPE_BYTES  # near it, within it
        assert verdicts(sp) == [True, True, True]
    finally:
        sp.close()


def test_one_number_for_the_largest_envelope() -> None:
    """The split every reader uses and the gate's default read the constant the limits are held to."""
    assert envelope.split.__defaults__ == (MAX_ENVELOPE_BYTES,) == (1 << 20,)
    assert gate.TrustedLine.accept_envelope.__kwdefaults__["max_bytes"] == MAX_ENVELOPE_BYTES
