"""A station directory: where its keys, config and store live, and how ``redline init`` makes one.

Layout::

    config.json            every limit and default (config.StationConfig)
    keys/root.key          root key seed (0600). Offline-capable: key and root rotation, revocation
                           and user add/rotate/remove need it; move it to offline storage after init
                           (docs/OPERATIONS.md)
    keys/root.pub          root public key (hex)
    keys/signing.key       online signing key seed (0600)
    keys/tls.key tls.crt   TLS key (0600) and self-signed certificate
    keys/certs.json        the root's certificates over the signing and TLS keys
    keys/signing.next.key  while a rotation is under way: the next signing key (0600) and
    keys/signing.next.cert.json   the root's certificate over it (redline/keys.py)
    ledger.sqlite          the transcript (ledger/sqlite.py)
    control.sock           local control socket for the CLI (0600, owner only)
    serve.lock             held (flock) by the one process that serves the station (``StationDir.hold``)
    .redline-init/         only while ``redline init`` builds the station (``StationDir.init``)
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import json
import os
import stat
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from redline.config import Limits, StationConfig, check_lang, check_station_name, parse_hostport
from redline.errors import ConfigError, StationBusyError
from redline.firstuse import dataclass_on_first_use

if TYPE_CHECKING:  # keys and the ledger load when they are used: 'redline status' uses neither
    import nacl.signing

    from redline.identity import SignedCert
    from redline.ledger.interface import LedgerStore


@dataclass_on_first_use(frozen=True)
class StationKeys:
    """The online keys a running station needs, with the root's certificates over them."""

    root_public: bytes
    signing: nacl.signing.SigningKey
    signing_cert: SignedCert
    tls_cert: SignedCert
    tls_cert_der: bytes
    next_signing: nacl.signing.SigningKey | None = None  # a rotation under way (redline/keys.py)
    next_cert: SignedCert | None = None

    @property
    def fingerprint(self) -> str:
        from redline import identity

        return identity.fingerprint(self.root_public)

    @functools.cached_property
    def key_id(self) -> str:  # kept: every envelope sealed names it (a hash each time, before)
        from redline import identity

        return identity.key_id(bytes(self.signing.verify_key))

    @property
    def next_key_id(self) -> str | None:
        from redline import identity

        return identity.key_id(bytes(self.next_signing.verify_key)) if self.next_signing is not None else None

    def for_key(self, key_id: str) -> StationKeys | None:
        """These keys signing with ``key_id`` (the current or the next key), or None if not held."""
        if key_id == self.key_id:
            return self
        if key_id == self.next_key_id and self.next_signing is not None and self.next_cert is not None:
            return replace(self, signing=self.next_signing, signing_cert=self.next_cert,
                           next_signing=None, next_cert=None)  # fmt: skip
        return None


class FolderHold:
    """This process's exclusive ``flock`` on a station folder's serve.lock: it serves the station
    (``Station``), or changes it while stopped (``store migrate``). Held by one process at a time;
    the kernel drops it when the process dies, kill -9 included. In one process the hold is shared
    (counted), so a station rebuilt in the process that serves it needs no second lock."""

    def __init__(self, key: Path, fd: int) -> None:
        self.key, self.fd, self.count = key, fd, 1

    def release(self) -> None:
        self.count -= 1
        if self.count == 0 and _HOLDS.get(self.key) is self:
            del _HOLDS[self.key]
            os.close(self.fd)  # the lock goes with the descriptor


_HOLDS: dict[Path, FolderHold] = {}  # this process's holds, by the folder's resolved path
LOCK_FILE = "serve.lock"
READERS_WAIT = 10.0  # s a station starting waits for readers that hold the folder shared to finish


class StationDir:
    def __init__(self, path: Path) -> None:
        self.path = path

    def hold(self, what: str) -> FolderHold:
        """Hold this folder exclusively for ``what`` ("serve", "store migrate"): refused, in one
        line naming the holder, while another process serves or changes the station. A reader that
        is checking the store's files (``_opening``) holds it shared for a moment: waited for."""
        key = self.path.resolve()
        held = _HOLDS.get(key)
        if held is not None:
            held.count += 1
            return held
        try:
            fd = os.open(self.path / LOCK_FILE, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError as exc:  # made by another user (a reader run as root before any serve, say)
            raise ConfigError(
                f"cannot open {self.path / LOCK_FILE}: {exc.strerror or exc}; it must belong to the station's "
                "user: chown it, or remove it while no station runs"
            ) from None
        try:
            deadline = time.monotonic() + READERS_WAIT
            while not _try_lock(fd, fcntl.LOCK_EX):
                if not _try_lock(fd, fcntl.LOCK_SH) or time.monotonic() > deadline:  # not only readers
                    holder = os.pread(fd, 200, 0).decode("utf-8", "replace").strip() or "another process"
                    raise StationBusyError(
                        f"{self.path} is held by {holder}: one process at a time may serve or change a station; "
                        "stop it first (Ctrl-C where it runs, kill -TERM with its pid, or 'systemctl stop redline' "
                        "for the systemd unit of docs/OPERATIONS.md), or wait for it to finish"
                    )
                fcntl.flock(fd, fcntl.LOCK_UN)
                time.sleep(0.05)
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"pid {os.getpid()} ({what})\n".encode(), 0)
        except BaseException:
            os.close(fd)
            raise
        _HOLDS[key] = FolderHold(key, fd)
        return _HOLDS[key]

    @contextlib.contextmanager
    def _opening(self) -> Iterator[bool]:
        """Whether a station serves this folder (True: only SQLite may touch the store's files, as
        the station checked their raw bytes when it opened them). False: none does, and none may
        start until the block ends (the folder is held shared meanwhile), so the caller may check
        the files' raw bytes itself. The process that holds the folder sees False: it is the one."""
        if self.path.resolve() in _HOLDS:
            yield False
            return
        try:  # never made here: a reader (root, say) must not leave a lock file the station cannot open
            fd = os.open(self.path / LOCK_FILE, os.O_RDONLY | os.O_CLOEXEC)
        except OSError:  # none: the folder was never served (its first serve makes it), nobody holds it
            yield False
            return
        try:
            yield not _try_lock(fd, fcntl.LOCK_SH)
        finally:
            os.close(fd)

    @property
    def config_path(self) -> Path:
        return self.path / "config.json"

    @property
    def keys(self) -> Path:
        return self.path / "keys"

    @property
    def ledger_path(self) -> Path:
        return self.path / "ledger.sqlite"

    @property
    def control_path(self) -> Path:
        return self.path / "control.sock"

    def config(self) -> StationConfig:
        return StationConfig.load(self.config_path)

    def exists(self) -> bool:
        return self.config_path.exists()

    def require(self) -> None:
        if not self.exists():
            raise ConfigError(
                f"{self.path} is not a station directory; create one with "
                f"'redline init --station {self.path} --name NAME --lang LANG --listen HOST:PORT'"
            )

    def check_private(self) -> None:
        """Refuse to run on a station whose secrets others could read or replace: the directory,
        its keys and users folders and every secret file must belong to us and be closed to group
        and others. The message names each problem and the command that fixes it."""
        from redline import keys as keyfiles

        uid = os.getuid()
        problems: list[str] = []
        folders = [self.path, self.keys, self.path / "users"]
        secrets = [self.keys / n for n in ("root.key", "signing.key", "tls.key", keyfiles.NEXT_KEY)]
        secrets += sorted((self.path / "users").glob("*.json"))
        for target in folders + secrets:
            try:
                st = target.stat()
            except FileNotFoundError:
                continue  # root.key lives offline; a station may have no users yet
            mode = stat.S_IMODE(st.st_mode)
            if st.st_uid != uid:
                problems.append(f"{target} belongs to uid {st.st_uid}, not to this user (run: chown {uid} {target})")
            if mode & 0o077:
                want = 0o700 if target in folders else 0o600
                problems.append(f"{target} is open to others (mode {mode:o}; run: chmod {want:o} {target})")
        if problems:
            raise ConfigError("the station's secrets are not private: " + "; ".join(problems))

    def load_keys(self) -> StationKeys:
        from redline import identity
        from redline import keys as keyfiles
        from redline.identity import SignedCert

        self.require()
        keyfiles.finish_signing(self.keys)  # a promotion a crash interrupted (redline/keys.py)
        keyfiles.finish_tls(self.keys)
        root_public = bytes.fromhex((self.keys / "root.pub").read_text().strip())
        certs = json.loads((self.keys / "certs.json").read_text())
        der = _pem_to_der((self.keys / "tls.crt").read_bytes())
        pending = keyfiles.pending_signing(self.keys)
        return StationKeys(
            root_public=root_public,
            signing=identity.load_signing_key(self.keys / "signing.key"),
            signing_cert=SignedCert.from_obj(certs["signing"]),
            tls_cert=SignedCert.from_obj(certs["tls"]),
            tls_cert_der=der,
            next_signing=pending[0] if pending else None,
            next_cert=pending[1] if pending else None,
        )

    def open_ledger(self) -> LedgerStore:
        """The station's ledger: ledger.sqlite here, or the PostgreSQL database config.json names."""
        self.require()
        from redline.ledger.stores import open_store

        config, station = self.config(), self.fingerprint()
        with self._opening() as serving:
            return open_store(config.store, self.ledger_path, raw_check=not serving, station=station)

    def read_ledger(self) -> LedgerStore:
        """A reader's connection (redline log, export, the console): read-only (for SQLite, through
        SQLite only)."""
        self.require()
        from redline.ledger.stores import open_store

        # the store's location only: a reader does not make the limits (StationConfig.load_store)
        store, station = StationConfig.load_store(self.config_path), self.fingerprint()
        with self._opening() as serving:
            return open_store(store, self.ledger_path, read_only=True, raw_check=not serving, station=station)

    def fingerprint(self) -> str:
        """This station's fingerprint, from keys/root.pub alone (nothing else read or finished: a
        reader's too): what its store must have been made for (``ledger.rows.check_station``)."""
        from redline import identity

        pub = self.keys / "root.pub"
        try:
            return identity.fingerprint(bytes.fromhex(pub.read_text().strip()))
        except (OSError, ValueError) as exc:
            raise ConfigError(f"{pub} cannot be read as a public key ({exc}); restore the station's keys") from None

    def served(self) -> bool:
        """A process serves this folder (or changes it while stopped) now: the lock, not the
        control socket, which a failed start or a second ``serve`` could leave missing."""
        if self.path.resolve() in _HOLDS:
            return True
        with self._opening() as serving:
            return serving

    def init(
        self,
        *,
        name: str,
        lang: str,
        listen: list[str],
        advertise: list[str] | None = None,
        limits: Limits | None = None,
        store: str = "",
    ) -> StationKeys:
        """Create keys, certificates, config and an empty store. Refuses to overwrite anything.
        ``store``: "" for ledger.sqlite in the folder, or a postgresql:// URL without a password.

        All or nothing, whatever moment the process is killed at (kill -9, a power cut): the
        station is built in a folder of its own inside this one (``INIT_STAGING``), every file and
        folder fsynced, then moved into place: keys/ and the store first, config.json (which makes
        the folder a station) last, each move made durable before the next. A kill before that
        last move leaves no station (``serve`` says to run ``init``), and ``init`` then takes away
        what the unfinished one left, which nothing else can have written, and starts again; after
        it, the station is whole. (Not the folder itself by one rename: the documented setup makes
        the folder beforehand, in a parent the station's user may not write to.)"""
        import shutil

        from redline.ledger.stores import store_url

        if self.exists():
            raise ConfigError(f"{self.path} already holds a station; refusing to overwrite its keys")
        check_station_name(name)
        check_lang(lang)
        if not listen:
            raise ConfigError("give at least one --listen HOST:PORT")
        for addr in [*listen, *(advertise or [])]:
            parse_hostport(addr)
        if store:
            store_url(store)  # no password in it, before anything is created
        config = StationConfig(
            name=name, lang=lang, listen=tuple(listen), advertise=tuple(advertise or ()), limits=limits or Limits(),
            store=store,
        )  # fmt: skip
        staging = StationDir(self.path / INIT_STAGING)
        self._undo_unfinished_init(staging, store)
        if self.keys.exists() or (not store and self.ledger_path.exists()):
            raise ConfigError(f"{self.path} already holds a station; refusing to overwrite its keys")
        made_folder = not self.path.exists()
        self.path.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(self.path, 0o700)
        staging.path.mkdir(mode=0o700)
        made = staging._build(config)
        # Into place, each move durable before the next: config.json last, so a folder that has it
        # has everything (and the staging folder's config.json says the moves have begun).
        os.replace(staging.keys, self.keys)
        if not store:
            for part in _store_files(staging.ledger_path):
                os.replace(part, self.path / part.name)
        _fsync(self.path)
        os.replace(staging.config_path, self.config_path)
        _fsync(self.path)
        if made_folder:  # its entry in the parent too, or a power cut could take the whole station away
            with contextlib.suppress(PermissionError):  # a parent we may write to but not read
                _fsync(self.path.parent)
        shutil.rmtree(staging.path)
        return made

    def _build(self, config: StationConfig) -> StationKeys:
        """Everything ``init`` makes, in this (new, empty) folder, durably: config.json last."""
        from redline import identity
        from redline.identity import KeyCert
        from redline.ledger.stores import open_store

        name = config.name
        self.keys.mkdir(mode=0o700)
        root = identity.new_signing_key(self.keys / "root.key")
        root_public = bytes(root.verify_key)
        (self.keys / "root.pub").write_text(root_public.hex() + "\n")
        signing = identity.new_signing_key(self.keys / "signing.key")
        der = identity.new_tls_identity(self.keys / "tls.key", self.keys / "tls.crt", name)
        fp = identity.fingerprint(root_public)
        now = int(time.time() * 1000)
        signing_pub = bytes(signing.verify_key)
        signing_cert = identity.certify(
            root,
            KeyCert(station=fp, name=name, role="signing", key=signing_pub.hex(),
                    key_id=identity.key_id(signing_pub), issued_at=now),
        )  # fmt: skip
        tls_spki = identity.spki_hash(der)
        tls_cert = identity.certify(
            root, KeyCert(station=fp, name=name, role="tls", key=tls_spki, key_id=tls_spki[:32], issued_at=now)
        )
        (self.keys / "certs.json").write_text(
            json.dumps({"signing": signing_cert.to_obj(), "tls": tls_cert.to_obj()}, indent=2) + "\n"
        )
        ledger = open_store(config.store, self.ledger_path, create=True, station=fp)
        ledger.put_cert(fp, identity.key_id(signing_pub), "signing", signing_cert)
        ledger.put_cert(fp, tls_spki[:32], "tls", tls_cert)
        ledger.close()
        for written in [*self.keys.iterdir(), self.keys, *_store_files(self.ledger_path)]:
            _fsync(written)
        config.save(self.config_path)
        _fsync(self.config_path)
        _fsync(self.path)
        return StationKeys(root_public, signing, signing_cert, tls_cert, der)

    def _undo_unfinished_init(self, staging: StationDir, store: str) -> None:
        """Take away what an ``init`` killed before it finished left here (this folder holds no
        config.json). Its staging folder is its own; keys/ and the store here are its own too once
        the staging folder holds config.json (the moves into place had begun: ``init`` refused to
        start over any keys/ or store). Never another station's: one without config.json whose
        keys/ came from elsewhere is still refused. On PostgreSQL, the store it made for its root
        key (in the database this init is given) is dropped if it holds nothing but init's own
        certificates (``stores.drop_left_by_init``)."""
        import shutil

        from redline.ledger.stores import drop_left_by_init

        if not staging.path.exists():
            return
        moved = staging.config_path.exists()
        if store:
            with contextlib.suppress(OSError, ValueError):  # no whole root.pub: no store was made either
                root_public = bytes.fromhex(((self if moved else staging).keys / "root.pub").read_text().strip())
                from redline import identity

                drop_left_by_init(store, identity.fingerprint(root_public))
        if moved:
            if self.keys.exists():
                shutil.rmtree(self.keys)
            for part in _store_files(self.ledger_path):
                part.unlink()
        shutil.rmtree(staging.path)
        _fsync(self.path)


INIT_STAGING = ".redline-init"  # where ``init`` builds a station before moving it into place


def _store_files(ledger: Path) -> list[Path]:
    """ledger.sqlite and the WAL and shared-memory files beside it, those that exist."""
    return [p for p in (ledger, ledger.with_name(ledger.name + "-wal"), ledger.with_name(ledger.name + "-shm"))
            if p.exists()]  # fmt: skip


def _fsync(path: Path) -> None:
    """Make a file's contents, or a folder's entries, durable."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _pem_to_der(pem: bytes) -> bytes:
    from cryptography import x509
    from cryptography.hazmat.primitives.serialization import Encoding

    return x509.load_pem_x509_certificate(pem).public_bytes(Encoding.DER)


def station_path(option: str | None) -> Path:
    """--station DIR, else $REDLINE_STATION, else ./station."""
    return Path(option or os.environ.get("REDLINE_STATION") or "station")


def _try_lock(fd: int, how: int) -> bool:
    try:
        fcntl.flock(fd, how | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True

