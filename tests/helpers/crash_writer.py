"""Writer process for tests/test_crash.py: appends to a real station ledger in group commits until killed.

Usage: crash_writer.py STATION_DIR LINE BATCH

Opens the station's ledger, continues its own chain from the stored head, and in each
``ledger.batch()`` accepts BATCH messages into the outbox, signs them into envelopes and marks
them signed. Only after the batch's COMMIT has returned does it print the highest seq now
committed ("accepted" in the sense of guarantee 1) and flush stdout. It never stops by itself.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

from redline.envelope import seal
from redline.home import StationDir


def main() -> None:
    station, line, batch = StationDir(Path(sys.argv[1])), sys.argv[2], int(sys.argv[3])
    keys = station.load_keys()
    ledger = station.open_ledger()
    lang = station.config().lang
    seq, prev = ledger.head(line, keys.fingerprint)
    print(f"ready {seq}", flush=True)
    while True:
        now = int(time.time() * 1000)
        with ledger.batch():
            for n in range(seq + 1, seq + batch + 1):
                content = {"text": f"message {n}"}
                item = ledger.accept(line, "TEXT", "ROUTINE", content, f"m{n}", now)
                env = seal(
                    keys.signing, line=line, sender=keys.fingerprint, key=keys.key_id, seq=n, sent_at=now,
                    kind="TEXT", prio="ROUTINE", prev=prev, seen_seq=0, seen_id=None, lang=lang,
                    content=content, salt=os.urandom(16),
                )  # fmt: skip
                ledger.append(env, now)
                ledger.mark_signed(item.local, n, env.id)
                prev = env.id
        seq += batch  # only now, after COMMIT returned
        print(seq, flush=True)


if __name__ == "__main__":
    main()
