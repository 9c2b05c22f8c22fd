"""THE trust gate: every rule that decides whether an envelope, a receipt, a checkpoint or a piece
of equivocation evidence of one line is trusted (python-tuf's ``trusted_metadata_set`` is the model).

A ``TrustedLine`` holds one line's verified state: the two stations' signing keys (certified by
roots pinned from outside), both chains' verified tails and ``seen`` links, what each station has
receipted, and the co-signed checkpoint chain. Untrusted input goes in as bytes; each ``accept_*``
either raises the one ``VerificationError`` subclass that names the rule broken, leaving the state
unchanged, or returns the verified object and advances the state.

Three users replay through it and nothing else decides trust: the live session (``session.py``),
``redline verify`` over a store (``ledger/verify.py``) and bundle verification (``bundle.py``). A
rule added here (key rotation, a witness) holds at all three at once.

Keys have windows in seq terms (guarantee 6, PROTOCOL.md section 5.9 ``KEY``): a station's chain is
signed by one key at a time. The first envelope fixes the first key (any key the pinned root
certified); a KEY envelope at seq s, signed by the key valid at s, names a new signing key the same
root certified: the old key's window closes at s, the new one's opens at s + 1. Every envelope
must be signed by the key whose window holds its seq (``KeyWindowError``), so an envelope signed
with a retired key at a higher seq, or with the new key before s + 1, is refused; live, in
``verify`` and in bundles alike, since all three replay the chains through this gate in order.

What the gate does not hold is the chains themselves: ``ChainView`` gives it the id stored at a seq
and a chain's RFC 9162 root at a size, from the ledger (live) or from the replay's own memory.
Seqs count from 1; Merkle leaf indexes (in ``merkle.py``) count from 0.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Protocol

from redline import media, recording
from redline.config import MAX_ENVELOPE_BYTES
from redline.envelope import Envelope, RawEnvelope, open_envelope, split
from redline.errors import (
    CertificateError,
    CheckpointChainError,
    CheckpointCoverageError,
    CheckpointError,
    CheckpointNumberError,
    CheckpointShrinkError,
    CosignError,
    KeyWindowError,
    NotEquivocationError,
    PrevLinkError,
    ReceiptBeyondChainError,
    ReceiptMismatchError,
    RecordingMismatchError,
    RedactedBodyError,
    RevocationError,
    RevokedEvidenceError,
    RootRotationError,
    SeenBackwardsError,
    SeenBeyondError,
    SeenIdError,
    SelfReceiptError,
    SeqOrderError,
    SplitViewError,
    UnknownKeyError,
    VerificationError,
    WrongLineError,
    WrongSenderError,
)
from redline.identity import KeyCert, SignedCert
from redline.identity import fingerprint as identity_fingerprint
from redline.kinds import CallAudio
from redline.recording import Parsed
from redline.statements import Checkpoint, Cosign, Receipt, Signed

if TYPE_CHECKING:
    from redline.persons import PersonSignatures


class ChainView(Protocol):
    """What the gate reads of the chains it has accepted (the caller stores them)."""

    def id_at(self, station: str, seq: int) -> str | None:
        """The id of ``station``'s envelope at ``seq`` (from 1), if held."""
        ...

    def root_at(self, station: str, size: int) -> bytes | None:
        """RFC 9162 root of the first ``size`` envelopes of ``station``'s chain; None if not held."""
        ...


@dataclass(frozen=True)
class Tail:
    seq: int
    id: str | None


@dataclass(frozen=True)
class KeyWindow:
    """A signing key's window in seq terms: it signs seqs ``first`` .. ``last`` (None: still open)."""

    key_id: str
    first: int
    last: int | None = None


@dataclass(frozen=True)
class Revoked:
    """A REVOKE's effect: what ``key_id`` signed of ``station``'s chain after seq ``after`` (the size
    of the co-signed checkpoint the REVOKE names) and before the REVOKE itself (``revoke_seq``) is
    "signed by a revoked key"."""

    station: str
    key_id: str
    after: int
    revoke_seq: int
    checkpoint: int
    reason: str
    after_other: int  # the other chain's size in that checkpoint: what the station had receipted by then


@dataclass(frozen=True)
class FlaggedStatement:
    """A receipt, checkpoint proposal or countersignature by ``station``, or a second envelope at a
    seq of a flagged run, signed by a key its root revoked, about what came after the checkpoint the
    REVOKE names (``what``: which one, in words): not the station's word, as the envelopes of a
    ``Flagged`` run."""

    station: str
    what: str
    revoked: Revoked

    def describe(self, name: str) -> str:
        r = self.revoked
        return (
            f"{name}'s {self.what}: signed by a revoked key ({r.key_id[:12]}, revoked by {name}'s root in its REVOKE "
            f"at seq {r.revoke_seq}, after checkpoint {r.checkpoint}: {r.reason})"
        )


@dataclass(frozen=True)
class Flagged:
    """A run of a station's envelopes, seqs ``first`` .. ``last``, signed by a revoked key."""

    station: str
    first: int
    last: int
    revoked: Revoked

    def describe(self, name: str) -> str:
        r = self.revoked
        span = f"seq {self.first}" if self.first == self.last else f"seqs {self.first}-{self.last}"
        return (
            f"{name} {span}: signed by a revoked key ({r.key_id[:12]}, revoked by {name}'s root in its REVOKE at "
            f"seq {r.revoke_seq}, after checkpoint {r.checkpoint}: {r.reason})"
        )


@dataclass(frozen=True)
class RootVersion:
    """One of a station's roots (section 5.9, ``ROOT``): version 1 is the root pinned at pairing;
    each later one was named by a ROOT envelope of the station's chain at ``seq``, signed by the root
    before it and by itself, and is trusted only once the OTHER station's ROOT_CONFIRM at its seq
    ``confirmed`` (None: not yet) says its operator compared the new safety code by voice."""

    version: int
    public: bytes
    seq: int = 0  # the ROOT envelope's seq in the station's chain (0: pinned at pairing)
    digest: str = ""  # the rotation's digest (rootrotation.digest)
    confirmed: int | None = 0  # the peer's ROOT_CONFIRM seq; 0 for the pinned root


@dataclass(frozen=True)
class _KeyChange:
    new: list[tuple[KeyCert, bytes]]
    revoked: Revoked | None
    root: RootVersion | None = None  # a ROOT: the new root, pending the peer's confirmation
    confirms: int | None = None  # a ROOT_CONFIRM: the index of the other station's root it confirms


@dataclass(frozen=True)
class LastCheckpoint:
    n: int
    digest: str
    sizes: Mapping[str, int]


def verified_keys(
    roots: Mapping[str, bytes], certs: Mapping[str, Iterable[SignedCert]],
    later: Mapping[str, Iterable[bytes]] | None = None,
) -> dict[str, dict[str, bytes]]:  # fmt: skip
    """Signing keys certified by each station's pinned root: station -> key id -> public key. A
    certificate the root did not sign raises ``CertificateError``, unless it is signed by one of
    ``later``: roots the station's ROOT envelopes claim (``claimed_roots``). Those are not trusted
    here: the gate checks each against the root in force where the KEY naming it stands."""
    keys: dict[str, dict[str, bytes]] = {fp: {} for fp in roots}
    for fp, held in certs.items():
        if fp not in roots:
            raise CertificateError(f"certificates of station {fp[:12]}, which is not one of this line's two")
        for signed in held:
            try:
                cert = signed.verify(roots[fp])
            except VerificationError as exc:
                if any(_certified_by(signed, r, fp) for r in (later or {}).get(fp, ())):
                    continue
                why = f"a key certificate of station {fp[:12]} is not signed by its root: {exc}"
                raise CertificateError(why) from exc
            if cert.role == "signing":
                keys[fp][cert.key_id] = bytes.fromhex(cert.key)
    return keys


def keys_certified_by(
    roots: Mapping[str, Sequence[bytes]], certs: Mapping[str, Iterable[SignedCert]]
) -> dict[str, dict[str, bytes]]:  # fmt: skip
    """Signing keys certified by one of each station's trusted ``roots`` (``certifying_roots``),
    one certificate at a time: one that verifies under none is not used (the caller reports it
    where it matters). For certificates from outside the chains: a checkpoint file's."""
    keys: dict[str, dict[str, bytes]] = {fp: {} for fp in roots}
    for fp, held in certs.items():
        for signed in held if fp in roots else ():
            for root in roots[fp]:
                try:
                    cert = signed.verify(root, station=fp)
                except VerificationError:
                    continue
                if cert.role == "signing":
                    keys[fp][cert.key_id] = bytes.fromhex(cert.key)
                break
    return keys


def _certified_by(signed: SignedCert, root: bytes, station: str) -> bool:
    try:
        signed.verify(root, station=station)
    except VerificationError:
        return False
    return True


def claimed_roots(envelopes: Iterable[Envelope]) -> list[bytes]:
    """The new roots a station's ROOT envelopes name, read WITHOUT any check: candidates only, for
    ``verified_keys`` to tell a certificate under a later root from a forged one. Trust in them is
    the gate's, when it replays the ROOT and the peer's ROOT_CONFIRM."""
    out: list[bytes] = []
    for env in envelopes:
        if env.kind != "ROOT" or env.body_bytes is None:
            continue
        try:
            from redline import canonical

            rotation: Any = env.content().get("rotation")
            data = canonical.decode_object(bytes.fromhex(rotation["data"]), "root rotation")
            out.append(bytes.fromhex(data["root"]))
        except (VerificationError, ValueError, TypeError, KeyError, AttributeError):
            continue
    return out


class TrustedLine:
    """One line's trusted state. ``stations`` are the two root fingerprints, pinned from outside."""

    def __init__(
        self,
        line: str,
        keys: Mapping[str, Mapping[str, bytes]],
        view: ChainView,
        *,
        tails: Mapping[str, Tail] | None = None,
        seen: Mapping[str, int] | None = None,
        receipted: Mapping[str, int] | None = None,
        last_checkpoint: LastCheckpoint | None = None,
        roots: Mapping[str, bytes] | None = None,
        people: bool = False,
    ) -> None:
        if len(keys) != 2:
            raise VerificationError("a line has exactly two stations")
        self.line = line
        self.stations: tuple[str, str] = tuple(sorted(keys))  # type: ignore[assignment]
        self._keys = {fp: dict(k) for fp, k in keys.items()}
        self._view = view
        self.tails: dict[str, Tail] = {fp: (tails or {}).get(fp, Tail(0, None)) for fp in self.stations}
        self.seen: dict[str, int] = {fp: (seen or {}).get(fp, 0) for fp in self.stations}
        self.receipted: dict[str, int] = {fp: (receipted or {}).get(fp, 0) for fp in self.stations}
        self.last_checkpoint = last_checkpoint
        # The pinned roots: a KEY envelope's new key is trusted only under its station's root.
        self._roots = dict(roots or {})
        # Each station's root history (section 5.9, ``ROOT``): the pinned root is version 1; every
        # check of a root-signed statement goes through ``root_for`` (the root in force where the
        # statement stands), so a rotation holds live, in verify and in bundles at once.
        self.root_history: dict[str, list[RootVersion]] = {
            fp: [RootVersion(1, root)] for fp, root in self._roots.items()
        }
        # Each station's key windows, in seq order; the last one is open. Empty until the
        # station's first envelope (or ``resume_keys``) fixes its first key.
        self.windows: dict[str, list[KeyWindow]] = {fp: [] for fp in self.stations}
        # Each station's revocations (REVOKE envelopes), in seq order.
        self.revocations: dict[str, list[Revoked]] = {fp: [] for fp in self.stations}
        # Receipts, checkpoint signatures and second envelopes under a revoked key (``_revoked_statement``).
        self.flagged_statements: list[FlaggedStatement] = []
        # ``people``: a whole transcript is replayed from seq 1 (verify, bundles), so every person
        # signature is checked up to its station's root (persons.PersonSignatures; section 5.10).
        # Live, the station's ops hold the same pins from the same rule.
        self.people: PersonSignatures | None = None
        if people:
            from redline.persons import PersonSignatures

            self.people = PersonSignatures(self._roots)

    # -- keys ------------------------------------------------------------------------------------
    def key(self, station: str, key_id: str) -> bytes:
        try:
            return self._keys[station][key_id]
        except KeyError:
            raise UnknownKeyError(
                f"signed with key {key_id}, which the station's pinned root never certified (substituted key?)"
            ) from None

    def other(self, station: str) -> str:
        a, b = self.stations
        return b if station == a else a

    # -- envelopes -------------------------------------------------------------------------------
    def signing_keys(self) -> dict[str, dict[str, bytes]]:
        """The keys this gate trusts (station -> key id -> public key), for worker processes that
        check signatures ahead of it (``accept_envelope(..., verified=...)``)."""
        return {fp: dict(k) for fp, k in self._keys.items()}

    def accept_envelope(
        self, raw: bytes | RawEnvelope, *, sender: str | None = None, redacted_ok: bool = False,
        max_bytes: int = MAX_ENVELOPE_BYTES, verified: Envelope | None = None,
    ) -> Envelope:  # fmt: skip
        """The next envelope of a chain: signature, line, sender, seq, prev and seen link.

        ``verified``: these bytes as ``open_envelope`` already opened them under ``signing_keys()``,
        in another process (``redline verify`` checks signatures on every core); every other rule
        still runs here."""
        if verified is None:
            rawenv = raw if isinstance(raw, RawEnvelope) else split(raw, max_bytes)
            env = open_envelope(rawenv, self.key)
        else:
            self.key(verified.header.sender, verified.header.key)  # signed under a key this gate trusts
            env = verified
        self._check_links(env, sender=sender, redacted_ok=redacted_ok)
        rotation = self._check_key(env)
        self._advance(env)
        self._rotate(env, rotation)
        if self.people is not None:
            self._observe_people(env)
        return env

    def _observe_people(self, env: Envelope) -> None:
        assert self.people is not None
        h = env.header
        pins = self.people.pins.get(h.sender)
        if pins is not None and h.kind == "ROSTER":  # its certificates: under the root in force there
            pins.root = self.root_for(h.sender, h.seen_seq)
        try:
            content = env.content() if env.body_bytes is not None else None
        except VerificationError:
            content = None
        self.people.observe(h.sender, h.seq, h.kind, content)

    def accept_sealed(self, env: Envelope) -> None:
        """One of our own envelopes, just sealed by this process: the chain rules hold (a bug
        here would make our own record unverifiable), the signature is our own."""
        self._check_links(env, sender=env.header.sender, redacted_ok=False)
        rotation = self._check_key(env)
        self._advance(env)
        self._rotate(env, rotation)

    # -- key windows -----------------------------------------------------------------------------
    def current_key(self, station: str) -> str | None:
        """The key id that signs ``station``'s next envelope (None: its first envelope decides)."""
        windows = self.windows[station]
        return windows[-1].key_id if windows else None

    def key_at(self, station: str, seq: int) -> str | None:
        """The key id whose window holds ``station``'s ``seq`` (None: no window fixed yet)."""
        for w in self.windows[station]:
            if w.first <= seq and (w.last is None or seq <= w.last):
                return w.key_id
        return self.current_key(station)

    def resume_keys(self, station: str, first_key: str | None, key_envelopes: list[Envelope]) -> None:
        """Rebuild a station's windows from its stored chain, at start: the key id its seq 1 names
        and its KEY and REVOKE envelopes in seq order (stored, so verified when they were accepted;
        the rules run again all the same)."""
        if first_key is None:
            return
        self.windows[station] = [KeyWindow(first_key, 1)]
        self.revocations[station] = []
        for env in sorted(key_envelopes, key=lambda e: e.seq):
            self._rotate(env, self._check_key(env))

    def _check_key(self, env: Envelope) -> _KeyChange | None:
        """The envelope is signed by the key valid at its seq; for a KEY or REVOKE envelope, what it
        changes: the new signing key it names, certified by the station's pinned root, and for a
        REVOKE the root's revocation (nothing changes here)."""
        h = env.header
        expected = self.key_at(h.sender, h.seq)
        if expected is not None and h.key != expected:
            retired = next((w for w in self.windows[h.sender] if w.key_id == h.key), None)
            if retired is not None and retired.last is not None:
                why = f"whose window closed at seq {retired.last} (a KEY envelope retired it)"
            else:
                why = "which is not the key valid at that seq (a KEY envelope has not opened its window)"
            raise KeyWindowError(f"seq {h.seq} is signed with key {h.key}, {why}; the key valid there is {expected}")
        if h.kind not in ("KEY", "REVOKE", "ROOT", "ROOT_CONFIRM"):
            return None
        if env.body_bytes is None:
            raise RedactedBodyError(
                f"{h.kind} envelope seq {h.seq} has no body: a {h.kind} changes trust and is never redacted"
            )
        if h.kind == "ROOT_CONFIRM":
            return _KeyChange([], None, confirms=self._check_root_confirm(env))
        if h.sender not in self.root_history:
            raise KeyWindowError(f"{h.kind} envelope seq {h.seq}: no pinned root was given to check it against")
        if h.kind == "ROOT":
            return _KeyChange([], None, root=self._check_root(env))
        root = self.root_for(h.sender, h.seen_seq)
        from redline import kinds  # kinds is the registry; imported here so the gate loads without it

        if h.kind == "KEY":
            try:
                body = kinds.Key.parse(env.content(), strict=True)
            except VerificationError as exc:
                why = f"KEY envelope seq {h.seq} does not name new keys as section 5.9 says: {exc}"
                raise KeyWindowError(why) from exc
            new = self._new_keys(env, body.certs, root)
            self._check_tls(env, body.certs, body.tls_der, root)
            return _KeyChange(new, None)
        try:
            revoke = kinds.Revoke.parse(env.content(), strict=True)
        except VerificationError as exc:
            raise RevocationError(f"REVOKE envelope seq {h.seq} is not as section 5.9 says: {exc}") from exc
        new = self._new_keys(env, revoke.certs or (), root)
        return _KeyChange(new, self._check_revocation(env, revoke, root, bool(new)))

    # -- roots -----------------------------------------------------------------------------------
    def root_for(self, station: str, seen_seq: int) -> bytes:
        """THE root that certifies ``station``'s keys in a statement of its chain whose envelope has
        seen the other chain up to ``seen_seq``: the latest version the other station confirmed
        (ROOT_CONFIRM) at a seq ``seen_seq`` covers. Every root-signed statement of a chain (KEY and
        REVOKE certificates, revocations) is checked under it, live, in verify and in bundles; the
        rule needs no clock and holds in any causal replay order."""
        return self.certifying_roots(station, seen_seq)[-1]

    def certifying_roots(self, station: str, seen_seq: int | None = None) -> list[bytes]:
        """THE rule for which roots of ``station`` are trusted: the pinned root and every later
        version the other station confirmed (ROOT_CONFIRM), oldest first; with ``seen_seq``, only the
        confirmations a statement that has seen the other chain up to ``seen_seq`` covers (its last
        is ``root_for``). Without it: all confirmed so far, for a certificate read from outside the
        chains (a checkpoint file's, BUNDLE.md section 4 step 5; ``keys_certified_by``)."""
        history = self.root_history[station]
        return [history[0].public] + [
            r.public for r in history[1:] if r.confirmed is not None and (seen_seq is None or r.confirmed <= seen_seq)
        ]

    def describe_roots(self, names: Mapping[str, str]) -> list[str]:
        """Each root rotation held, in words, for a verifier's report (PROTOCOL.md 5.9, ROOT)."""
        out = []
        for station in self.stations:
            name = names.get(station, station[:12])
            for r in self.root_history.get(station, [])[1:]:
                fp = identity_fingerprint(r.public)[:16]
                other = names.get(self.other(station), self.other(station)[:12])
                said = (f"confirmed by {other} at its seq {r.confirmed} (the new safety code compared by voice)"
                        if r.confirmed is not None else
                        f"NOT confirmed by {other}: keys and people it certifies are not trusted")  # fmt: skip
                out.append(f"ROOT: {name} root version {r.version} ({fp}…) named at {name} seq {r.seq}, {said}")
        return out

    def pending_root(self, station: str) -> RootVersion | None:
        """``station``'s newest root if the other station has not confirmed it yet (not trusted)."""
        last = self.root_history.get(station, [])[-1:]
        return last[0] if last and last[0].confirmed is None else None

    def _check_root(self, env: Envelope) -> RootVersion:
        """A ROOT: the statement naming the station's next root, signed by the root in force and by
        the new one (each key once), the next version, and none pending; the new root is recorded,
        not trusted, until the peer's ROOT_CONFIRM (section 5.9, ``ROOT``)."""
        from redline import rootrotation

        h = env.header
        where = f"ROOT envelope seq {h.seq}"
        history = self.root_history[h.sender]
        last = history[-1]
        if last.confirmed is None:
            raise RootRotationError(f"{where}: root version {last.version} still awaits the peer's confirmation")
        if h.seen_seq < last.confirmed:
            raise RootRotationError(f"{where} has not seen the peer's confirmation of root version {last.version}")
        from redline import kinds

        try:
            body = kinds.Root.parse(env.content(), strict=True)
        except VerificationError as exc:
            raise RootRotationError(f"{where} is not as section 5.9 says: {exc}") from exc
        r = body.rotation
        signed = {"data": r.data, "prev_sig": r.prev_sig, "root_sig": r.root_sig}
        try:
            rot = rootrotation.open_rotation(signed, station=h.sender, current=last.public, version=last.version)
        except VerificationError as exc:
            raise RootRotationError(f"{where} is not certified by the root in force and the new root: {exc}") from exc
        new = bytes.fromhex(rot.root)
        if any(r.public == new for r in history):
            raise RootRotationError(f"{where} names a root this station already had: a key counts once")
        return RootVersion(rot.version, new, h.seq, rootrotation.digest(signed), None)

    def _check_root_confirm(self, env: Envelope) -> int:
        """A ROOT_CONFIRM: the other station's pending ROOT, named by seq, id and rotation digest,
        held at that seq of its chain and seen by this envelope. Filed only after its operator typed
        the new safety code heard by voice; from then on the new root is trusted."""
        h = env.header
        where = f"ROOT_CONFIRM envelope seq {h.seq}"
        from redline import kinds

        try:
            body = kinds.RootConfirm.parse(env.content(), strict=True)
        except VerificationError as exc:
            raise RootRotationError(f"{where} is not as section 5.9 says: {exc}") from exc
        ref, digest = body.root, body.rotation
        other = self.other(h.sender)
        if ref.sender != other:
            raise RootRotationError(f"{where} names a ROOT of another station than the peer")
        history = self.root_history.get(other, [])
        pending = self.pending_root(other)
        if pending is None or ref.seq != pending.seq:
            raise RootRotationError(f"{where} names no root rotation of the peer awaiting confirmation")
        if ref.seq > h.seen_seq:
            raise RootRotationError(f"{where} confirms a ROOT it has not seen")
        if self._view.id_at(other, pending.seq) != ref.id or digest != pending.digest:
            raise RootRotationError(f"{where} names another ROOT than the one held at seq {pending.seq}")
        return len(history) - 1

    def _new_keys(self, env: Envelope, certs: Iterable[Any], root: bytes) -> list[tuple[KeyCert, bytes]]:
        """The new signing key(s) a KEY or REVOKE names, each certified by ``root`` (``root_for``)."""
        h = env.header
        new: list[tuple[KeyCert, bytes]] = []
        for c in certs:
            signed = SignedCert(bytes.fromhex(c.data), bytes.fromhex(c.sig))
            try:
                cert = signed.verify(root, station=h.sender)
            except VerificationError as exc:
                raise KeyWindowError(
                    f"{h.kind} envelope seq {h.seq} names a key its station's root in force did not certify: {exc}"
                ) from exc
            if cert.role != "signing":
                continue  # a TLS key: carried for the record (rotation of TLS keys is not acted on yet)
            if any(w.key_id == cert.key_id for w in self.windows[h.sender]) or cert.key_id == h.key:
                raise KeyWindowError(
                    f"{h.kind} envelope seq {h.seq} names key {cert.key_id}, which already signed this chain: a "
                    "key counts once"
                )
            new.append((cert, bytes.fromhex(cert.key)))
        if len(new) > 1:
            why = f"{h.kind} envelope seq {h.seq} names {len(new)} signing keys; a station signs with one"
            raise KeyWindowError(why)
        return new

    def _check_tls(self, env: Envelope, certs: Iterable[Any], der_hex: str | None, root: bytes) -> None:
        """A KEY naming a TLS key carries its certificate (``tls_der``), whose SPKI hash the
        root's ``tls`` certificate names: the peer pins it from that DER (section 3.6)."""
        h = env.header
        tls = [c for c in (SignedCert(bytes.fromhex(x.data), bytes.fromhex(x.sig)).verify(root, station=h.sender)
                           for x in certs)
               if c.role == "tls"]  # fmt: skip
        if not tls:
            if der_hex is not None:
                raise KeyWindowError(f"KEY envelope seq {h.seq} carries a TLS certificate but no tls key certificate")
            return
        if len(tls) > 1 or der_hex is None:
            raise KeyWindowError(f"KEY envelope seq {h.seq} must name one TLS key and carry its certificate (tls_der)")
        from redline.identity import spki_hash

        try:
            spki = spki_hash(bytes.fromhex(der_hex))
        except ValueError as exc:
            raise KeyWindowError(f"KEY envelope seq {h.seq}: tls_der is not an X.509 certificate") from exc
        if spki != tls[0].key:
            raise KeyWindowError(f"KEY envelope seq {h.seq}: tls_der is not the certificate its root certified")

    def _check_revocation(self, env: Envelope, body: Any, root: bytes, rotates: bool) -> Revoked:
        """A REVOKE's revocation: signed by the sender's pinned root for this line, naming a key that
        signed this chain and is not revoked yet, and a checkpoint both stations co-signed over the
        chain held (its proposal and cosign travel in the REVOKE, so every verifier checks it from
        the REVOKE and the chain alone). A REVOKE of the key still signing must rotate away from it."""
        from redline.revocation import Revocation

        h = env.header
        where = f"REVOKE envelope seq {h.seq}"
        try:
            rev = Revocation.open(Signed(bytes.fromhex(body.revocation.data), bytes.fromhex(body.revocation.sig)), root,
                                  station=h.sender)
        except VerificationError as exc:
            raise RevocationError(f"{where}: its revocation is not signed by the station's pinned root: {exc}") from exc
        if rev.line != self.line:
            raise RevocationError(f"{where}: its revocation is for line {rev.line[:8]}, not this one")
        if not any(w.key_id == rev.key for w in self.windows[h.sender]):
            raise RevocationError(f"{where} revokes key {rev.key}, which never signed this chain")
        if any(r.key_id == rev.key for r in self.revocations[h.sender]):
            raise RevocationError(f"{where} revokes key {rev.key}, which is already revoked: a key counts once")
        if self.current_key(h.sender) == rev.key and not rotates:
            raise RevocationError(
                f"{where} revokes key {rev.key}, which signs this chain now, without naming the next signing key"
            )
        try:
            proof = body.checkpoint
            proposal, cosign = Signed.decode(bytes.fromhex(proof.proposal)), Signed.decode(bytes.fromhex(proof.cosign))
            peek, cpeek = Checkpoint.peek(proposal), Cosign.peek(cosign)
            if peek.by not in self.stations or cpeek.by != self.other(peek.by):
                raise CosignError("the checkpoint is not proposed by one station and countersigned by the other")
            cp = Checkpoint.open(proposal, self.key(peek.by, peek.key), peeked=peek)
            cs = Cosign.open(cosign, self.key(cpeek.by, cpeek.key))
        except VerificationError as exc:
            raise RevocationError(f"{where}: the checkpoint it names is not one both stations signed: {exc}") from exc
        digest = proposal.digest(Checkpoint.DOMAIN)
        if cp.line != self.line or cs.line != self.line or cs.checkpoint != digest:
            raise RevocationError(f"{where}: the countersignature is not over the checkpoint it names, of this line")
        if digest != rev.checkpoint_digest or cp.n != rev.checkpoint_n:
            raise RevocationError(f"{where}: the revocation names checkpoint {rev.checkpoint_n}, not the one carried")
        for head in cp.heads:
            if head.station not in self.stations:
                raise RevocationError(f"{where}: checkpoint {cp.n} covers a chain of another line")
            held = self.tails[head.station].seq
            if head.station != h.sender and head.size > held:
                continue  # the other chain may not be replayed that far yet; its head is checked when it is
            root_held = self._view.root_at(head.station, head.size) if head.size <= held else None
            if root_held is None or root_held.hex() != head.root:
                raise RevocationError(
                    f"{where}: checkpoint {cp.n} does not cover the chain held (size {head.size}): split view"
                )
        return Revoked(
            station=h.sender, key_id=rev.key, after=cp.head(h.sender).size, revoke_seq=h.seq,
            checkpoint=cp.n, reason=rev.reason, after_other=cp.head(self.other(h.sender)).size,
        )  # fmt: skip

    def _rotate(self, env: Envelope, change: _KeyChange | None) -> None:
        h = env.header
        windows = self.windows[h.sender]
        if not windows:
            windows.append(KeyWindow(h.key, 1 if h.seq == 1 else h.seq))
        if change is None:
            return
        for cert, public in change.new:
            windows[-1] = KeyWindow(windows[-1].key_id, windows[-1].first, h.seq)
            windows.append(KeyWindow(cert.key_id, h.seq + 1))
            self._keys[h.sender][cert.key_id] = public
        if change.revoked is not None:
            self.revocations[h.sender].append(change.revoked)
        self._apply_roots(env, change)

    def _apply_roots(self, env: Envelope, change: _KeyChange) -> None:
        if change.root is not None:
            self.root_history[env.header.sender].append(change.root)
        if change.confirms is not None:
            history = self.root_history[self.other(env.header.sender)]
            history[change.confirms] = replace(history[change.confirms], confirmed=env.header.seq)

    def resume_roots(self, envelopes: Iterable[Envelope]) -> None:
        """Rebuild both stations' root histories from their stored ROOT and ROOT_CONFIRM envelopes,
        at start, before ``resume_keys`` (whose KEYs are checked under them). For each station, its
        ROOTs and the other's confirmations in causal order: a ROOT after every confirmation its
        ``seen`` covers, a confirmation after the ROOT it names."""
        self.root_history = {fp: [RootVersion(1, root)] for fp, root in self._roots.items()}
        held = list(envelopes)
        for station in self.stations:
            mine = [e for e in held if e.kind == "ROOT" and e.header.sender == station]
            theirs = [e for e in held if e.kind == "ROOT_CONFIRM" and e.header.sender == self.other(station)]
            events = sorted([(e.header.seen_seq, 1, e) for e in mine] + [(e.seq, 0, e) for e in theirs],
                            key=lambda t: (t[0], t[1]))  # fmt: skip
            for _, _, env in events:  # stored, so checked when accepted; the root rules run again
                self._apply_roots(env, self._check_root_only(env))

    def _check_root_only(self, env: Envelope) -> _KeyChange:
        if env.kind == "ROOT":
            return _KeyChange([], None, root=self._check_root(env))
        return _KeyChange([], None, confirms=self._check_root_confirm(env))

    # -- revocation ------------------------------------------------------------------------------
    def revoked_at(self, station: str, seq: int) -> Revoked | None:
        """The revocation that flags ``station``'s envelope at ``seq`` as signed by a revoked key."""
        key = self.key_at(station, seq)
        for r in self.revocations[station]:
            if r.key_id == key and r.after < seq < r.revoke_seq:
                return r
        return None

    def _revoked_statement(self, station: str, key_id: str, what: str, beyond: Callable[[Revoked], bool]) -> bool:
        """Flag ``station``'s statement ``what``, signed by ``key_id``, if its root revoked that key
        and the statement is ``beyond`` the checkpoint the REVOKE names (the revoked key's word
        counts up to there, as for envelopes: ``revoked_at``). The statement is still accepted:
        a receipt or countersignature the station really made before the REVOKE stays on record,
        and a thief's says nothing the chains do not (it is checked against them like any other).
        Verify and bundles list every one (their REVOKE is known before any receipt or checkpoint
        is checked); live, those that come after the REVOKE. True when flagged."""
        for r in self.revocations[station]:
            if r.key_id == key_id and beyond(r):
                self.flagged_statements.append(FlaggedStatement(station, what, r))
                return True
        return False

    def revoked_key(self, station: str, key_id: str) -> bool:
        """Whether ``station``'s root has revoked ``key_id`` (a REVOKE this gate accepted)."""
        return any(r.key_id == key_id for r in self.revocations[station])

    def flagged(self) -> list[Flagged]:
        """Every run of envelopes signed by a revoked key after the checkpoint its REVOKE names: the
        revoked key's window within (checkpoint size, REVOKE seq), per station, in seq order."""
        out: list[Flagged] = []
        for station in self.stations:
            for r in self.revocations[station]:
                for w in self.windows[station]:
                    if w.key_id != r.key_id:
                        continue
                    lo = max(w.first, r.after + 1)
                    hi = min(w.last if w.last is not None else self.tails[station].seq, r.revoke_seq - 1)
                    if lo <= hi:
                        out.append(Flagged(station, lo, hi, r))
        return out

    def _check_links(self, env: Envelope, *, sender: str | None, redacted_ok: bool) -> None:
        h = env.header
        if h.line != self.line:
            raise WrongLineError(f"envelope belongs to line {h.line[:8]}, not this one (replayed from another line)")
        if h.sender not in self.stations or (sender is not None and h.sender != sender):
            raise WrongSenderError(f"envelope was signed by station {h.sender[:12]}, not by the station expected")
        if env.body_bytes is None and not redacted_ok:
            raise RedactedBodyError("envelope arrived without its body: only stored copies may be redacted")
        tail = self.tails[h.sender]
        if h.seq != tail.seq + 1:
            raise SeqOrderError(f"envelope seq {h.seq} does not follow seq {tail.seq}")
        if h.prev != tail.id:
            raise PrevLinkError(f"seq {h.seq} does not name the previous envelope as prev: the chain was cut or forked")
        other = self.other(h.sender)
        if h.seen_seq < self.seen[h.sender]:
            raise SeenBackwardsError(f"seq {h.seq}: seen goes back from seq {self.seen[h.sender]} to {h.seen_seq}")
        if h.seen_seq > self.tails[other].seq:
            raise SeenBeyondError(
                f"seq {h.seq} claims to have seen seq {h.seen_seq} of the other side, which was never sent or is not "
                "held (entries deleted or the tail was cut)"
            )
        if h.seen_seq and self._view.id_at(other, h.seen_seq) != h.seen_id:
            raise SeenIdError(
                f"seq {h.seq} names seq {h.seen_seq} of the other side with an id that is not the one held"
            )

    def _advance(self, env: Envelope) -> None:
        h = env.header
        self.tails[h.sender] = Tail(h.seq, env.id)
        self.seen[h.sender] = h.seen_seq

    # -- receipts --------------------------------------------------------------------------------
    def accept_receipt(self, signed: Signed, *, by: str | None = None, peeked: Receipt | None = None) -> Receipt:
        """A station's cumulative statement that it stored the other's chain up to seq N, id H.
        ``peeked``: what ``Receipt.peek(signed)`` gave for this very ``signed`` (the live session
        parses a receipt first to drop copies and old ones): not parsed again."""
        peek = peeked if peeked is not None else Receipt.peek(signed)
        if peek.by not in self.stations or (by is not None and peek.by != by):
            raise WrongSenderError(f"receipt by station {peek.by[:12]}, not by the station expected on this line")
        receipt = Receipt.open(signed, self.key(peek.by, peek.key), peeked=peek)
        if receipt.line != self.line:
            raise WrongLineError(f"receipt is for line {receipt.line[:8]}, not this one")
        if receipt.of == receipt.by:
            raise SelfReceiptError("a station receipted its own chain: a receipt is only worth the other side's word")
        if receipt.of not in self.stations:
            raise WrongSenderError("receipt is for a station that is not on this line")
        if receipt.seq > self.tails[receipt.of].seq:
            raise ReceiptBeyondChainError(
                f"receipt for seq {receipt.seq} of a chain held only up to seq {self.tails[receipt.of].seq}"
            )
        if self._view.id_at(receipt.of, receipt.seq) != receipt.id:
            raise ReceiptMismatchError(
                f"receipted a different envelope ({receipt.id[:12]}) at seq {receipt.seq} from the one the chain holds"
            )
        # A receipt of an envelope the named checkpoint did not cover was made after it: flagged, and
        # not counted as receipted (it is not the station's word).
        what = f"receipt of the other station's seq {receipt.seq}"
        if not self._revoked_statement(receipt.by, receipt.key, what, lambda r: receipt.seq > r.after_other):
            self.receipted[receipt.of] = max(self.receipted[receipt.of], receipt.seq)
        return receipt

    # -- checkpoints -----------------------------------------------------------------------------
    def check_proposal(self, proposal: Signed) -> Checkpoint:
        """A checkpoint proposal: signed by one of the two, the next number, chained to the last
        checkpoint, over tree heads of exactly what is held, never shrinking a chain."""
        peek = Checkpoint.peek(proposal)
        if peek.by not in self.stations:
            raise WrongSenderError("checkpoint proposed by a station that is not on this line")
        cp = Checkpoint.open(proposal, self.key(peek.by, peek.key), peeked=peek)
        if cp.line != self.line:
            raise WrongLineError(f"checkpoint is for line {cp.line[:8]}, not this one")
        last = self.last_checkpoint
        if cp.n != (last.n + 1 if last else 1):
            raise CheckpointNumberError(
                f"checkpoint {cp.n} is not the next one: checkpoints run 1, 2, 3 … and the last was "
                f"{last.n if last else 0}"
            )
        if cp.prev != (last.digest if last else None):
            raise CheckpointChainError(f"checkpoint {cp.n} does not name checkpoint {cp.n - 1} as prev")
        if {h.station for h in cp.heads} != set(self.stations):
            raise CheckpointError(f"checkpoint {cp.n} covers chains of other stations than this line's two")
        for head in cp.heads:
            held = self.tails[head.station].seq
            root = self._view.root_at(head.station, head.size) if head.size <= held else None
            if root is None:
                raise CheckpointCoverageError(
                    f"checkpoint {cp.n} covers {head.size} envelopes of a chain held only up to {held}"
                )
            if root.hex() != head.root:
                raise SplitViewError(
                    f"checkpoint {cp.n}: the tree head at size {head.size} does not match the chain held: split view"
                )
            if last is not None and head.size < last.sizes.get(head.station, 0):
                raise CheckpointShrinkError(f"checkpoint {cp.n} shrinks a chain an earlier checkpoint covered")
        return cp

    def accept_checkpoint(self, proposal: Signed, cosign: Signed) -> Checkpoint:
        """A proposal and the other station's countersignature over exactly it."""
        cp = self.check_proposal(proposal)
        cpeek = Cosign.peek(cosign)
        if cpeek.by not in self.stations or cpeek.by == cp.by:
            raise CosignError(f"checkpoint {cp.n} is not countersigned by the other station of this line")
        cs = Cosign.open(cosign, self.key(cpeek.by, cpeek.key))
        digest = proposal.digest(Checkpoint.DOMAIN)
        if cs.line != self.line or cs.checkpoint != digest:
            raise CosignError(f"the countersignature is not over checkpoint {cp.n} of this line")
        for by, key, what in ((cp.by, cp.key, "proposal"), (cs.by, cs.key, "countersignature")):
            self._revoked_statement(by, key, f"{what} of checkpoint {cp.n}", lambda r: cp.n > r.checkpoint)
        self.last_checkpoint = LastCheckpoint(cp.n, digest, {h.station: h.size for h in cp.heads})
        return cp

    # -- equivocation ----------------------------------------------------------------------------
    def check_equivocation(self, a: bytes, b: bytes, *, presented_now: bool = False) -> tuple[Envelope, Envelope]:
        """Proof that a station signed two different envelopes at one seq of THIS line: both
        validly signed by it, and one of them the chain's own entry at that seq. Anything less
        (two lines, an envelope the chain does not hold) proves nothing and frames no one.
        ``presented_now``: ``b`` arrives now, live, after every REVOKE this gate holds (not a record
        kept from before)."""
        ea, eb = open_envelope(split(a), self.key), open_envelope(split(b), self.key)
        ha, hb = ea.header, eb.header
        if ha.line != self.line or hb.line != self.line:
            raise NotEquivocationError("the two envelopes are not both of this line: that is no equivocation")
        if ha.sender != hb.sender or ha.seq != hb.seq or ea.id == eb.id:
            raise NotEquivocationError("the evidence is not two different envelopes of one station at one seq")
        if self._view.id_at(ha.sender, ha.seq) not in (ea.id, eb.id):
            raise NotEquivocationError(f"neither envelope is the chain's own entry at seq {ha.seq}")
        valid = self.key_at(ha.sender, ha.seq)
        if valid is not None and not ha.key == hb.key == valid:
            raise KeyWindowError(f"the two envelopes at seq {ha.seq} are not both signed by the key valid there")
        # Under a revoked key, the key's word is not the station's (as for a receipt): at a seq of the
        # run its root revoked, and at any seq once the REVOKE is held (a thief keeps the key and can
        # sign at an old seq as well as a new one): flagged, and no proof that the station
        # equivocated, which would halt the line. A record kept from before the REVOKE, at a seq the
        # named checkpoint covers, stays evidence.
        seq, what = ha.seq, f"second envelope at seq {ha.seq}"
        if self._revoked_statement(ha.sender, ha.key, what, lambda r: presented_now or r.after < seq < r.revoke_seq):
            raise RevokedEvidenceError(
                f"two envelopes at seq {ha.seq}, the second signed by a key the station's root has revoked: the "
                "stolen key's work, not the station's word"
            )
        return ea, eb


def extends(last: Checkpoint, last_digest: str, later: Checkpoint) -> None:
    """A checkpoint numbered after ``last`` (from outside a bundle, which need not hold the ones
    between): the very next one names ``last`` as prev, and no later one shrinks a chain."""
    if later.n == last.n + 1 and later.prev != last_digest:
        raise CheckpointChainError(f"checkpoint {later.n} does not name checkpoint {last.n} as prev")
    for head in later.heads:
        if head.size < last.head(head.station).size:
            raise CheckpointShrinkError(f"checkpoint {later.n} covers less of a chain than checkpoint {last.n}")


def accept_recording(data: bytes, audio: CallAudio, recorder: str, peer: str) -> Parsed:
    """A call recording (PROTOCOL.md section 8.10) is evidence as far as its packets hash, by the
    section 8.9 rule, to the digest its recording station signed in CALL_AUDIO: ``audio`` is that
    station's verified CALL_AUDIO body, ``recorder`` its fingerprint, ``peer`` the other station's.
    Raises ``RecordingError`` (not a sealed recording) or ``RecordingMismatchError``."""
    rec = recording.parse(data)
    if rec.call != audio.ring.id:
        raise RecordingMismatchError(f"the recording is of call {rec.call[:12]}, not {audio.ring.id[:12]}")
    if rec.sender != (recorder if rec.direction == "sent" else peer):
        raise RecordingMismatchError(f"the recording's {rec.direction} packets name the wrong sender")
    signed = audio.sent if rec.direction == "sent" else audio.received
    digest = media.digest_of(rec.call, rec.sender, rec.packets)
    if digest != signed.digest or len(rec.packets) != signed.packets:
        raise RecordingMismatchError(
            f"the {rec.direction} recording of call {rec.call[:12]} ({len(rec.packets)} packets) does not hash to the "
            f"digest signed in its station's CALL_AUDIO ({signed.packets} packets): it was altered, cut or swapped"
        )
    return rec
