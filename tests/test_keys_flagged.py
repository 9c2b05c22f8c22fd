"""Envelopes "signed by a revoked key" (a REVOKE, PROTOCOL.md section 5.9) are shown as such where
people read the record: each row of ``redline log`` (read from the store, without the gate) and the
line's status at both ends, exactly the runs the gate flags; a pending root rotation's safety code
is in the status too."""

from __future__ import annotations

import json
from pathlib import Path

import nacl.signing

from redline import views
from redline.testing import SessionPair
from tests.test_keys_revoke import checkpoint_now, revoke_in_session
from tests.test_keys_root import rotation_of


def test_log_and_status_show_exactly_the_envelopes_signed_by_a_revoked_key(tmp_path: Path) -> None:
    sp = SessionPair(tmp_path)
    sp.run()
    sp.send("a", "EUCOM 1")
    sp.send("b", "NDMC 1")
    sp.run()
    n = checkpoint_now(sp)
    for i in range(2):
        sp.send("b", f"NDMC after the theft {i}")
        sp.send("a", f"EUCOM after the theft {i}")
        sp.run()
    revoked = revoke_in_session(sp, n)
    sp.run()
    sp.send("b", "NDMC under the new key")
    sp.run()
    (run,) = sp.a.gate.flagged()
    want = set(range(run.first, run.last + 1))
    for s, peer in ((sp.a, False), (sp.b, True)):
        rows = views.transcript(s.ledger, s.ledger.find_line(sp.line), limit=None).rows
        marked = {r.seq for r in rows if r.revoked is not None and r.ours == peer}
        assert marked == want and not any(r.revoked for r in rows if r.ours != peer), (marked, want)
        why = next(r.revoked for r in rows if r.revoked)
        assert why.startswith("signed by a revoked key") and revoked[:12] in why
        (said,) = s.status().revoked
        assert f"seqs {run.first}-{run.last}: signed by a revoked key" in said
        assert s.status().root_code is None
    # the CLI's log on the stopped station says it on each of those rows
    sp.close()
    from click.testing import CliRunner

    from redline.cli.common import main

    res = CliRunner().invoke(main, ["log", "--station", str(sp.dir_a.path), sp.line, "--all", "--json"])
    assert res.exit_code == 0, res.output
    rows = json.loads(res.output)["rows"]
    assert {r["seq"] for r in rows if r["revoked"]} == want
    res = CliRunner().invoke(main, ["log", "--station", str(sp.dir_a.path), sp.line, "--all"])
    assert res.output.count("REVOKED:") == len(want), res.output


def test_status_names_the_safety_code_of_a_root_rotation_awaiting_confirmation(tmp_path: Path) -> None:
    sp = SessionPair(tmp_path)
    sp.run()
    sp.b.accept("ROOT", "FLASH", rotation_of(sp, nacl.signing.SigningKey.generate()), None, sp.clock.wall)
    sp.run()
    held = sp.a.root_safety_code()
    assert held is not None and sp.a.status().root_code == held[1] and sp.b.status().root_code is None
    sp.a.confirm_root(held[1], sp.clock.wall)
    sp.run()
    assert sp.a.status().root_code is None
    sp.close()
