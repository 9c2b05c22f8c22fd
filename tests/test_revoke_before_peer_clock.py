"""Attack finding 4: 'redline keys revoke --before TIME' must date each checkpoint by a time WE signed,
never by the countersignature's own time field: for every checkpoint we proposed, that is the PEER's
claim, and a peer that backdates it moved the REVOKE past the compromise."""
from __future__ import annotations

from pathlib import Path

from redline import canonical, rotation
from redline import keys as keyfiles
from redline.statements import Checkpoint, Cosign
from redline.testing import StationPair
from tests.test_keys import in_loop, root_of

DAY = 86_400_000


@in_loop
async def test_revoke_before_a_time_does_not_take_the_peers_word_for_when_it_cosigned(tmp_path: Path) -> None:
    async with StationPair(tmp_path) as sp:
        # The victim is the station that proposes checkpoints (the lower fingerprint, session.is_proposer):
        # every countersignature it holds is the peer's, with the peer's time in it.
        v, o = ("a", "b") if sp.a.keys.fingerprint < sp.b.keys.fingerprint else ("b", "a")
        dv = sp.dir_a if v == "a" else sp.dir_b
        vs = sp.station(v)
        await sp.send(v, "before the compromise")
        await sp.advance(1)
        compromise = sp.clocks[v].wall()  # our key is stolen now: nothing co-signed from here on is trusted
        sp.clocks[o].offset_ms = -DAY  # the peer backdates every claim it signs by a day
        await sp.advance(1)
        for i in range(4):
            await sp.send(o, f"peer FLASH {i}", kind="FLASH", prio="FLASH")
            await sp.advance(1)
            await sp.send(v, f"our FLASH {i}", kind="FLASH", prio="FLASH")
            await sp.advance(1)
        ours = vs.keys.fingerprint
        our_time = {}  # when WE signed our part of each checkpoint, by our own clock
        for n, p, c in vs.ledger.checkpoints(sp.line):
            cp = Checkpoint.peek(p)
            our_time[n] = cp.time if cp.by == ours else Cosign.peek(c).time
        _, cert = keyfiles.prepare_signing(dv.keys, root_of(dv), dv.config().name)
        contents, missing = rotation.revoke_contents(
            vs.ledger, root_of(dv), key=vs.keys.key_id, cert=cert, reason="stolen",
            issued_at=sp.clocks[v].wall(), before=compromise, station=ours,
        )
        named = [canonical.decode_object(bytes.fromhex(c["revocation"]["data"]), "revocation")["checkpoint"]["n"]
                 for c in contents.values()]
        # No checkpoint was co-signed before the compromise here: the line gets a plain KEY (missing).
        assert named or missing
        late = [n for n in named if our_time[n] >= compromise]
        assert not late, (f"the REVOKE names checkpoint {late}, which we signed {(our_time[late[0]] - compromise)} ms "
                          "AFTER the compromise (the peer's countersignature claimed a time a day earlier)")
