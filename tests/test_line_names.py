"""A line is named by its id, 8 or more of its hex digits, or its peer's name: one rule for both
stores (``ledger.model.find_line``). A shorter prefix named the only line there was: ``redline send
'' hi`` sent on it."""

from __future__ import annotations

from pathlib import Path

import pytest

from redline.errors import LineNotFoundError
from redline.ledger.sqlite import Ledger
from redline.testing import free_ports, make_station, pair_directly


def test_a_line_is_named_by_eight_hex_digits_or_its_peer_never_fewer(tmp_path: Path) -> None:
    pa, pb = free_ports(2)
    a, b = make_station(tmp_path, "EUCOM", "en", pa), make_station(tmp_path, "NDMC", "ru", pb)
    line = pair_directly(a, b)
    ledger = Ledger(a.ledger_path)
    try:
        assert ledger.find_line(line).line == ledger.find_line(line[:8]).line == ledger.find_line("NDMC").line == line
        for short in ("", line[:1], line[:7]):
            with pytest.raises(LineNotFoundError, match="an id needs at least 8 of its hex digits"):
                ledger.find_line(short)
        with pytest.raises(LineNotFoundError, match=r"no line matches '(f|0){8}'; lines at this station"):
            ledger.find_line("ffffffff" if not line.startswith("ffffffff") else "00000000")
    finally:
        ledger.close()
