"""PROTOCOL.md 5.9 ``ROSTER``: a sender SHOULD give each person the root's ``cert``. The demo's
own people were published without one, so its transcript showed "0 up to its root": now the demo
certifies them with the root it keeps in keys/root.key, and a ROSTER of them carries ``cert``."""

from __future__ import annotations

from pathlib import Path

from redline import persons
from redline.scenario import EUCOM_USERS, NDMC_USERS, add_demo_users
from redline.testing import make_station


def test_the_demo_publishes_its_people_certified_by_the_station_root(tmp_path: Path) -> None:
    eucom, ndmc = make_station(tmp_path, "EUCOM", "en", 1), make_station(tmp_path, "NDMC", "ru", 2)
    add_demo_users(eucom.path, ndmc.path)
    for d, users in ((eucom, EUCOM_USERS), (ndmc, NDMC_USERS)):
        people = persons.load_users(d.path)
        assert sorted(p.name for p in people) == sorted(n for n, _ in users)
        root = d.load_keys().root_public
        for p in people:
            assert p.cert is not None, p.name
            cert = persons.PersonCert.open(p.cert, root)
            assert (cert.name, cert.role, cert.key) == (p.name, p.role, p.key)
        assert all("cert" in u for u in persons.roster_content(people)["users"])
