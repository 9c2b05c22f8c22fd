"""kill -9 (or a power cut) while a recording is being sealed keeps every packet the ``.part`` held.

``recording.seal`` used to truncate the ``.part`` in place (O_TRUNC) and write the whole content
back: a process killed between the two left an empty or cut file, and the restart's ``recover``
found nothing of the call's audio (its CALL_AUDIO ``interrupted`` then vouched for 0 packets). Now
the sealed copy goes through a temporary file and a rename; a crash anywhere leaves the ``.part``
or the sealed file. The station's process dies here where kill -9 would find it: a child process
that ``os._exit``s inside ``seal``."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from redline import recording

CALL, US, PEER, LINE = "ab" * 32, "cd" * 32, "ef" * 32, "12" * 16
PACKETS = 200
ROOT = str(Path(__file__).resolve().parent.parent)

DIE = {  # where in seal the process dies
    "writing the sealed copy": "os.write = lambda fd, data: os._exit(9)",
    "after the rename, before the .part is removed": "Path.unlink = lambda self, missing_ok=False: os._exit(9)",
}


@pytest.mark.slow
@pytest.mark.parametrize("where", list(DIE))
def test_kill_9_during_seal_keeps_every_packet_the_part_file_held(tmp_path: Path, where: str) -> None:
    child = textwrap.dedent(f"""
        import os
        from pathlib import Path
        from redline import recording
        r = recording.Recorder(recording.path_of(Path({str(tmp_path)!r}), {LINE!r}, {CALL!r}, "sent"),
                               {CALL!r}, {US!r}, "sent")
        for i in range({PACKETS}):
            r.add(i, i * 960, bytes([0x78]) + bytes(100))  # a CELT 20 ms mono packet
        r._close()
        {DIE[where]}
        recording.seal(r.part)
    """)
    proc = subprocess.run([sys.executable, "-c", child], env={**os.environ, "PYTHONPATH": ROOT}, check=False)
    assert proc.returncode == 9
    packets, problems = recording.recover(tmp_path, LINE, CALL, US, PEER)
    assert problems == []
    assert len(packets["sent"]) == PACKETS
    # what verify reads (the sealed file, by ``find``) holds them all, and nothing is left beside it
    found = recording.find(tmp_path, LINE, CALL, "sent")
    assert found is not None and found[1]
    assert len(recording.parse(found[0].read_bytes()).packets) == PACKETS
    left = sorted(p.name for p in recording.directory(tmp_path, LINE).iterdir())
    assert left == [f"{CALL}.received.opus", found[0].name]
