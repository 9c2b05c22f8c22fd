"""Bundles: one line's transcript as a self-contained file a third party can check (guarantee 4).

A bundle is one JSON object (docs/BUNDLE.md is its normative description). It is not canonical and
not signed as a whole: every signed object inside it (envelopes, key certificates, receipts,
checkpoints, cosigns) is carried as its exact bytes in hex, and only those signatures prove
anything. Nothing in a bundle is trusted until it verifies under the two root keys whose
fingerprints the verifier gives from outside it; the station names, the exporter and the export
time are claims, shown as such.

``verify_bundle`` reports what is proven: the co-signed prefix (up to the last checkpoint both
stations signed), the one-sided tail beyond it (signed by its sender only, with how far the other
side receipted it), the bodies that were redacted, and, given a checkpoint from outside the bundle
(normally the other side's latest, see ``export_checkpoint``), whether the bundle's chains are
consistent with it by RFC 9162: a cut tail or a split view is found there and nowhere else.

Pure except ``write_bundle`` and ``read_bundle``, the only functions that touch a file.
"""

from __future__ import annotations

import json
import os
import re
import stat
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from redline import canonical, identity, jsonin, kinds, merkle, recording
from redline.envelope import RawEnvelope, split
from redline.errors import BundleError, EncodingError, MerkleError, VerificationError
from redline.gate import accept_recording, extends, keys_certified_by
from redline.identity import HEX32, HEX64, SignedCert
from redline.ledger.verify import LineData, LineReport, Problem, StoredRow, verify_line
from redline.statements import Checkpoint, Cosign, Signed

BUNDLE_FORMAT = "redline-bundle/1"
CHECKPOINT_FORMAT = "redline-checkpoint/1"
MAX_FILE_BYTES = 1 << 30  # a bundle of a very busy line is large; a file past this is refused unread
MIN_FINGERPRINT_DIGITS = 32  # the part read aloud at pairing (identity.show_fingerprint)
MIN_REDACT_PREFIX = 8

_HEX = re.compile(r"\A(?:[0-9a-f]{2})*\Z")


# -- making a bundle -----------------------------------------------------------------------------


def build_bundle(
    line_data: LineData, roots: Mapping[str, bytes], exporter: str, redact: Iterable[str] = (), *, exported_at: int,
    recordings: Sequence[bytes] = (),
) -> dict[str, Any]:
    """The bundle of one line as held by ``exporter``, with the bodies named in ``redact`` removed.

    ``recordings`` (the exporter's sealed call recordings, ``recording.py``) go in a ``recordings``
    member, which a bundle without them does not have.

    ``redact`` holds envelope ids or unique id prefixes of at least 8 hex digits. A redacted
    envelope keeps its header and signature; the header's salted body hash still commits to the
    body, so the bundle verifies as before. Raises ``BundleError`` for an unknown or ambiguous id.
    """
    stations = sorted(line_data.chains)
    if len(stations) != 2:
        raise BundleError(f"line {line_data.line[:8]} does not have exactly two stations' chains")
    for fp in stations:
        if fp not in roots or identity.fingerprint(roots[fp]) != fp:
            raise BundleError(f"no root key matching station {fp[:16]} was given to export line {line_data.line[:8]}")
    if exporter not in stations:
        raise BundleError(f"the exporter {exporter[:16]} is not one of the two stations of line {line_data.line[:8]}")
    chosen = _resolve_redactions(line_data, redact)
    carried = []
    for data in recordings:
        try:
            rec = recording.parse(data)
        except VerificationError as exc:
            raise BundleError(f"a recording to export is unusable: {exc}") from None
        carried.append({"station": exporter, "call": rec.call, "direction": rec.direction, "ogg": data.hex()})

    def env_hex(raw: bytes, eid: str) -> str:
        return (_redact_raw(raw) if eid in chosen else raw).hex()

    return {
        "format": BUNDLE_FORMAT,
        "line": line_data.line,
        "exported_by": exporter,
        "exported_at": exported_at,
        "stations": [
            {
                "fingerprint": fp,
                "name": line_data.names.get(fp, fp[:12]),
                "root": roots[fp].hex(),
                "certs": [c.to_obj() for c in line_data.certs.get(fp, [])],
                "chain": [{"seq": r.seq, "id": r.id, "envelope": env_hex(r.raw, r.id)} for r in line_data.chains[fp]],
            }
            for fp in stations
        ],
        "receipts": [s.encode().hex() for s in line_data.receipts],
        "checkpoints": [
            {"n": n, "proposal": p.encode().hex(), "cosign": c.encode().hex()} for n, p, c in line_data.checkpoints
        ],
        "equivocations": [
            {"sender": sender, "seq": seq, "first": env_hex(a, _id_of(a)), "second": env_hex(b, _id_of(b))}
            for sender, seq, a, b in line_data.equivocations
        ],
        **({"recordings": carried} if carried else {}),
    }


def _id_of(raw: bytes) -> str:
    try:
        return split(raw).id
    except EncodingError:
        return ""


def _redact_raw(raw: bytes) -> bytes:
    """The same envelope with its body removed (body length 0): id and signature unchanged."""
    env = split(raw)
    n = len(env.header_bytes)
    return n.to_bytes(4, "big") + env.header_bytes + (0).to_bytes(4, "big") + env.sig


def _resolve_redactions(line_data: LineData, redact: Iterable[str]) -> set[str]:
    held = {r.id for rows in line_data.chains.values() for r in rows}
    for _, _, a, b in line_data.equivocations:
        held |= {_id_of(a), _id_of(b)} - {""}
    chosen: set[str] = set()
    for wanted in redact:
        w = wanted.strip().lower()
        if len(w) < MIN_REDACT_PREFIX or not re.fullmatch(r"[0-9a-f]+", w):
            raise BundleError(f"cannot redact {wanted!r}: give an envelope id, or at least its first 8 hex digits")
        matches = [i for i in held if i.startswith(w)]
        if not matches:
            raise BundleError(f"cannot redact {wanted!r}: no envelope with that id on line {line_data.line[:8]}")
        if len(matches) > 1:
            raise BundleError(f"cannot redact {wanted!r}: it matches {len(matches)} envelopes; give more of the id")
        chosen.add(matches[0])
    return chosen


def export_checkpoint(line_data: LineData, exporter: str, *, exported_at: int, n: int | None = None) -> dict[str, Any]:
    """A line's last (or ``n``-th) co-signed checkpoint as a small file of its own, with the key
    certificates that verify it: what one side hands a third party to check the other side's bundle."""
    held = {k: (p, c) for k, p, c in line_data.checkpoints}
    if not held:
        raise BundleError(f"line {line_data.line[:8]} has no co-signed checkpoint yet")
    k = max(held) if n is None else n
    if k not in held:
        raise BundleError(f"line {line_data.line[:8]} has no checkpoint {k} (last: {max(held)})")
    proposal, cosign = held[k]
    return {
        "format": CHECKPOINT_FORMAT,
        "line": line_data.line,
        "n": k,
        "proposal": proposal.encode().hex(),
        "cosign": cosign.encode().hex(),
        "certs": {fp: [c.to_obj() for c in certs] for fp, certs in sorted(line_data.certs.items())},
        "exported_by": exporter,
        "exported_at": exported_at,
    }


@dataclass(frozen=True)
class CheckpointFile:
    """A parsed checkpoint file: still untrusted until ``verify_bundle`` checks it."""

    line: str
    n: int
    proposal: Signed
    cosign: Signed
    certs: dict[str, list[SignedCert]]

    @property
    def signed(self) -> tuple[Signed, Signed]:
        return (self.proposal, self.cosign)


def parse_checkpoint(obj: Any) -> CheckpointFile:
    """Parse a checkpoint file's JSON object (structure only; nothing here is verified)."""
    try:
        _require(obj, "checkpoint file", {
            "format": str, "line": str, "n": int, "proposal": str, "cosign": str, "certs": dict,
            "exported_by": str, "exported_at": int,
        })  # fmt: skip
        if obj["format"] != CHECKPOINT_FORMAT:
            raise _Bad("checkpoint file", f"format is {obj['format']!r}, not {CHECKPOINT_FORMAT!r}")
        certs = {
            _hex_str(fp, HEX64, "checkpoint file certs", "a station fingerprint"): [
                _cert(c, f"checkpoint file certs of {fp[:12]}") for c in _list(v, "checkpoint file certs")
            ]
            for fp, v in obj["certs"].items()
        }
        return CheckpointFile(
            line=obj["line"], n=obj["n"], proposal=_statement(_hex(obj["proposal"], "checkpoint file proposal")),
            cosign=_statement(_hex(obj["cosign"], "checkpoint file cosign")), certs=certs,
        )  # fmt: skip
    except _Bad as exc:
        raise BundleError(str(exc.problem)) from None


# -- files: the only I/O --------------------------------------------------------------------------


def encode_bundle(bundle: Mapping[str, Any]) -> bytes:
    """A bundle's file bytes: what ``write_bundle`` writes and the console's export sends."""
    return (json.dumps(bundle, indent=1, ensure_ascii=False) + "\n").encode("utf-8")


def write_bundle(path: Path, bundle: Mapping[str, Any]) -> None:
    """Write a bundle (or checkpoint file) durably: a temporary file, fsync, then rename."""
    data = encode_bundle(bundle)
    # A fresh name, created exclusively and never through a symbolic link: a link planted at a
    # predictable temporary name cannot make us write somewhere else.
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{os.urandom(6).hex()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


def read_bundle(path: Path, *, max_bytes: int = MAX_FILE_BYTES) -> dict[str, Any]:
    """Read a bundle (or checkpoint file) as a JSON object. Duplicate member names, NaN and
    Infinity are refused: two readers must never see two different bundles in one file."""
    try:
        data = _read_at_most(path, max_bytes)
        if data.startswith(b"\xef\xbb\xbf"):
            raise BundleError(f"{path} starts with a byte order mark; a bundle is plain UTF-8 JSON without one")
        text = data.decode("utf-8")
    except OSError as exc:
        raise BundleError(f"cannot read {path}: {exc.strerror or exc}") from exc
    except UnicodeDecodeError as exc:
        raise BundleError(f"{path} is not UTF-8 text: {exc}") from exc

    def pairs(items: list[tuple[str, Any]]) -> dict[str, Any]:
        obj: dict[str, Any] = {}
        for k, v in items:
            if k in obj:
                raise BundleError(f"{path}: member {k!r} appears twice in one object")
            obj[k] = v
        return obj

    def constant(name: str) -> Any:
        raise BundleError(f"{path}: {name} is not a JSON number")

    try:
        obj = jsonin.loads(text, object_pairs_hook=pairs, parse_constant=constant)
    except EncodingError as exc:
        raise BundleError(f"{path} is {exc}") from None
    if not isinstance(obj, dict):
        raise BundleError(f"{path} does not hold a JSON object")
    return obj


def _read_at_most(path: Path, max_bytes: int) -> bytes:
    """The file's bytes, refused past ``max_bytes`` as they are read: a pipe (``<(curl …)``) has no
    size to check first, and a device such as /dev/zero never ends."""
    with path.open("rb") as f:
        st = os.fstat(f.fileno())
        if stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode):
            raise BundleError(f"{path} is a device, not a bundle file")
        if st.st_size > max_bytes:
            raise BundleError(f"{path} is {st.st_size} bytes, over the {max_bytes}-byte limit for a bundle")
        data = bytearray()
        while chunk := f.read(1 << 20):
            data += chunk
            if len(data) > max_bytes:
                raise BundleError(f"{path} holds more than the {max_bytes}-byte limit for a bundle")
    return bytes(data)


# -- reading a bundle's structure (untrusted) -----------------------------------------------------


class _Bad(Exception):
    def __init__(self, where: str, what: str) -> None:
        super().__init__(f"{where}: {what}")
        self.problem = Problem(where, what)


def _require(obj: Any, where: str, fields: Mapping[str, type | tuple[type, ...]]) -> None:
    if not isinstance(obj, dict):
        raise _Bad(where, "is not a JSON object")
    try:
        identity.require(obj, where, fields)
    except VerificationError as exc:
        raise _Bad(where, str(exc).removeprefix(f"{where}: ")) from None


def _list(value: Any, where: str) -> list[Any]:
    if not isinstance(value, list):
        raise _Bad(where, "is not a JSON array")
    return value


def _hex(value: Any, where: str) -> bytes:
    if not isinstance(value, str) or not _HEX.match(value):
        raise _Bad(where, "is not lower-case hex of whole bytes")
    return bytes.fromhex(value)


def _hex_str(value: Any, pattern: re.Pattern[str], where: str, what: str) -> str:
    if not isinstance(value, str) or not pattern.match(value):
        raise _Bad(where, f"is not {what} (lower-case hex)")
    return value


def _cert(obj: Any, where: str) -> SignedCert:
    _require(obj, where, {"data": str, "sig": str})
    return SignedCert(_hex(obj["data"], f"{where} data"), _hex(obj["sig"], f"{where} sig"))


def _statement(raw: bytes) -> Signed:
    # Lengths that do not add up leave a statement that can never verify, so verify_line reports
    # it where it stands (as ledger/sqlite.py does for a corrupted stored statement).
    try:
        return Signed.decode(raw)
    except EncodingError:
        return Signed(raw, b"")


@dataclass(frozen=True)
class _Station:
    fingerprint: str  # as claimed
    name: str  # as claimed
    root: bytes
    certs: list[SignedCert]
    chain: list[StoredRow]


@dataclass(frozen=True)
class _Parsed:
    line: str
    exported_by: str
    exported_at: int
    stations: list[_Station]
    receipts: list[Signed]
    checkpoints: list[tuple[int, Signed, Signed]]
    equivocations: list[tuple[str, int, bytes, bytes]]
    recordings: list[tuple[str, str, str, bytes]]  # (recording station, call, direction, Ogg bytes)


def _parse(bundle: Any) -> _Parsed:
    _require(bundle, "bundle", {
        "format": str, "line": str, "exported_by": str, "exported_at": int, "stations": list,
        "receipts": list, "checkpoints": list, "equivocations": list,
        **({"recordings": list} if isinstance(bundle, dict) and "recordings" in bundle else {}),
    })  # fmt: skip
    if bundle["format"] != BUNDLE_FORMAT:
        raise _Bad("bundle", f"format is {bundle['format']!r}; this verifier reads {BUNDLE_FORMAT!r}")
    line = _hex_str(bundle["line"], HEX32, "bundle line", "a 32-digit line id")
    exported_by = _hex_str(bundle["exported_by"], HEX64, "bundle exported_by", "a station fingerprint")
    raw_stations = bundle["stations"]
    if len(raw_stations) != 2:
        raise _Bad("bundle stations", f"holds {len(raw_stations)} stations, not the two of a line")
    stations = []
    for i, s in enumerate(raw_stations):
        where = f"bundle stations[{i}]"
        _require(s, where, {"fingerprint": str, "name": str, "root": str, "certs": list, "chain": list})
        fp = _hex_str(s["fingerprint"], HEX64, f"{where} fingerprint", "a station fingerprint")
        root = _hex(_hex_str(s["root"], HEX64, f"{where} root", "a 32-byte public key"), f"{where} root")
        certs = [_cert(c, f"{where}.certs[{j}]") for j, c in enumerate(s["certs"])]
        chain = []
        for j, e in enumerate(s["chain"]):
            at = f"{where}.chain[{j}]"
            _require(e, at, {"seq": int, "id": str, "envelope": str})
            chain.append(StoredRow(e["seq"], e["id"], _hex(e["envelope"], f"{at} envelope")))
        stations.append(_Station(fp, s["name"], root, certs, chain))
    if not stations[0].fingerprint < stations[1].fingerprint:
        raise _Bad("bundle stations", "are not two different stations in fingerprint order")
    receipts = [_statement(_hex(r, f"bundle receipts[{i}]")) for i, r in enumerate(bundle["receipts"])]
    checkpoints = []
    for i, c in enumerate(bundle["checkpoints"]):
        at = f"bundle checkpoints[{i}]"
        _require(c, at, {"n": int, "proposal": str, "cosign": str})
        checkpoints.append(
            (c["n"], _statement(_hex(c["proposal"], f"{at} proposal")), _statement(_hex(c["cosign"], f"{at} cosign")))
        )
    equivocations = []
    for i, e in enumerate(bundle["equivocations"]):
        at = f"bundle equivocations[{i}]"
        _require(e, at, {"sender": str, "seq": int, "first": str, "second": str})
        sender = _hex_str(e["sender"], HEX64, f"{at} sender", "a station fingerprint")
        equivocations.append((sender, e["seq"], _hex(e["first"], f"{at} first"), _hex(e["second"], f"{at} second")))
    recordings = []
    for i, e in enumerate(bundle.get("recordings", [])):
        at = f"bundle recordings[{i}]"
        _require(e, at, {"station": str, "call": str, "direction": str, "ogg": str})
        station = _hex_str(e["station"], HEX64, f"{at} station", "a station fingerprint")
        call = _hex_str(e["call"], HEX64, f"{at} call", "a CALL_RING id")
        if e["direction"] not in recording.DIRECTIONS:
            raise _Bad(f"{at} direction", "is not 'sent' or 'received'")
        recordings.append((station, call, e["direction"], _hex(e["ogg"], f"{at} ogg")))
    return _Parsed(line, exported_by, bundle["exported_at"], stations, receipts, checkpoints, equivocations,
                   recordings)  # fmt: skip


# -- the report ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ChainConsistency:
    """One chain checked against the tree head of a checkpoint from outside the bundle."""

    station: str
    name: str
    checkpoint_size: int
    bundle_size: int  # envelopes of this chain that verified in the bundle
    state: str  # "consistent", "cut" or "split"


@dataclass
class Consistency:
    """The bundle against a co-signed checkpoint given from outside it."""

    n: int
    proposed_at: int
    cosigned_at: int
    chains: list[ChainConsistency] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


@dataclass
class BundleReport:
    line: str
    names: dict[str, str]  # fingerprint -> the name its root certified (else the bundle's, marked so)
    trusted: bool  # both roots match fingerprints given from outside
    exported_by: str = ""
    exported_at: int = 0
    problems: list[Problem] = field(default_factory=list)  # the bundle's form and its roots
    line_report: LineReport | None = None
    consistency: Consistency | None = None
    redacted: list[str] = field(default_factory=list)  # ids of verified envelopes without a body
    receipted: dict[str, int] = field(default_factory=dict)  # chain -> highest seq the other side receipted
    last_cosign_time: int | None = None
    recordings: list[str] = field(default_factory=list)  # call recordings that match their signed CALL_AUDIO

    @property
    def all_problems(self) -> list[Problem]:
        line = self.line_report.problems if self.line_report else []
        cons = self.consistency.problems if self.consistency else []
        return [*self.problems, *line, *cons]

    @property
    def ok(self) -> bool:
        return self.line_report is not None and not self.all_problems

    def _name(self, fp: str) -> str:
        return self.names.get(fp, fp[:12])

    def summary(self) -> list[str]:
        """What the bundle proves, in plain words: problems first."""
        out = [f"PROBLEM: {p}" for p in self.all_problems]
        if not self.trusted or self.line_report is None:
            out.append("NOT VERIFIED: nothing in this bundle is proven (its roots do not match the fingerprints given)")
            return out
        r = self.line_report
        stations = sorted(r.chain_sizes, key=lambda fp: (self._name(fp), fp))  # a stable order for people
        head = "VERIFIED" if self.ok else "FAILED"
        out.append(
            f"{head}: line {self.line[:8]} between "
            + " and ".join(f"{self._name(fp)} ({identity.show_fingerprint(fp)})" for fp in stations)
            + f"; exported by {self._name(self.exported_by)} at {when(self.exported_at)} (the exporter's claim)"
        )
        if self.problems or r.problems:
            out.append("only what verified before the first problem is counted below")
        if r.last_checkpoint is not None:
            prefix = ", ".join(_span(self._name(fp), 1, r.cosigned_sizes.get(fp, 0)) for fp in stations)
            cp = r.last_checkpoint
            cosigner = next((fp for fp in stations if fp != cp.by), "")
            out.append(
                f"co-signed prefix: {prefix} (checkpoint {cp.n}, signed by both: {self._name(cp.by)} at "
                f"{when(cp.time)}, {self._name(cosigner)} at {when(self.last_cosign_time)})"
            )
        else:
            out.append("co-signed prefix: none (no checkpoint verified); everything below is one-sided")
        tails = []
        for fp in stations:
            lo, hi = r.cosigned_sizes.get(fp, 0) + 1, r.chain_sizes.get(fp, 0)
            if hi >= lo:
                others = [o for o in stations if o != fp]
                receipted = self.receipted.get(fp, 0)
                by = self._name(others[0]) if others else "the other side"
                note = f"receipted by {by} up to {receipted}" if receipted >= lo else f"not receipted by {by}"
                tails.append(f"{_span(self._name(fp), lo, hi)} (signed by {self._name(fp)} only; {note})")
        out.append("one-sided tail: " + ("; ".join(tails) if tails else "none"))
        out += [f"REVOKED: {words}" for words in r.revoked(self._name)]
        out += r.roots  # root rotations in the bundle, and whether each was confirmed
        out += r.people  # every person signature, checked up to its station's root
        if self.redacted:
            ids = ", ".join(i[:12] for i in self.redacted)
            n = len(self.redacted)
            out.append(
                f"1 body redacted (id {ids}) — its hash is still covered by the signature"
                if n == 1
                else f"{n} bodies redacted (ids {ids}) — their hashes are still covered by the signatures"
            )
        if self.recordings:
            out.append(f"{len(self.recordings)} call recording(s) match the audio digests signed in CALL_AUDIO: "
                       + ", ".join(self.recordings))  # fmt: skip
        c = self.consistency
        if c is None:
            out.append(
                "not checked against a checkpoint from outside the bundle: a cut tail or a split view would not "
                "show; give the other side's latest checkpoint"
            )
        elif not c.chains:
            out.append(f"checkpoint {c.n} given from outside could not be used (see the problems above)")
        else:
            sizes = ", ".join(_span(x.name, 1, x.checkpoint_size) for x in c.chains)
            verdict = "consistent with it" if c.ok else "NOT consistent with it"
            out.append(
                f"checkpoint {c.n} given from outside (signed by both at {when(c.proposed_at)} and "
                f"{when(c.cosigned_at)}) covers {sizes}: the bundle is {verdict}"
            )
            if c.ok and any(x.checkpoint_size > r.cosigned_sizes.get(x.station, 0) for x in c.chains):
                out.append(f"so the co-signed prefix extends to {sizes}")
        return out

    def to_obj(self) -> dict[str, Any]:
        r = self.line_report
        names = self._name
        return {
            "line": self.line,
            "ok": self.ok,
            "trusted": self.trusted,
            "exported_by": names(self.exported_by) if self.exported_by else None,
            "exported_at": self.exported_at,
            "chains": {names(k): v for k, v in r.chain_sizes.items()} if r else {},
            "cosigned": {names(k): v for k, v in r.cosigned_sizes.items()} if r else {},
            "one_sided_tail": {names(k): r.tail(k) for k in r.chain_sizes} if r else {},
            "receipted": {names(k): v for k, v in self.receipted.items()},
            "checkpoints": r.checkpoints if r else 0,
            "receipts": r.receipts if r else 0,
            "redacted": list(self.redacted),
            "recordings": list(self.recordings),
            "revoked": [
                {"station": names(f.station), "first": f.first, "last": f.last, "key": f.revoked.key_id,
                 "revoke_seq": f.revoked.revoke_seq, "checkpoint": f.revoked.checkpoint, "reason": f.revoked.reason}
                for f in r.flagged
            ] if r else [],
            "revoked_statements": [
                {"station": names(f.station), "what": f.what, "key": f.revoked.key_id,
                 "revoke_seq": f.revoked.revoke_seq, "checkpoint": f.revoked.checkpoint, "reason": f.revoked.reason}
                for f in r.flagged_statements
            ] if r else [],
            "person_signatures": list(r.people) if r else [],
            "roots": list(r.roots) if r else [],
            "consistency": None if self.consistency is None else {
                "checkpoint": self.consistency.n,
                "ok": self.consistency.ok,
                "chains": {
                    x.name: {"checkpoint": x.checkpoint_size, "bundle": x.bundle_size, "state": x.state}
                    for x in self.consistency.chains
                },
            },
            "problems": [str(p) for p in self.all_problems],
            "summary": self.summary(),
        }  # fmt: skip


def when(ms: int | None) -> str:
    if ms is None:
        return "an unknown time"
    try:
        return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S") + "Z"
    except (OverflowError, OSError, ValueError):
        return f"{ms} ms"


def _span(name: str, lo: int, hi: int) -> str:
    if hi < lo:
        return f"{name} none"
    return f"{name} {lo}" if hi == lo else f"{name} {lo}..{hi}"


# -- verifying a bundle ------------------------------------------------------------------------------


def normalize_fingerprint(given: str) -> str:
    """A fingerprint as a person types it: all 64 hex digits, or at least the first 32 (the part read
    aloud at pairing), in either case, with spaces or colons between groups."""
    fp = re.sub(r"[\s:]", "", given).lower()
    if not re.fullmatch(rf"[0-9a-f]{{{MIN_FINGERPRINT_DIGITS},64}}", fp):
        raise BundleError(
            f"{given!r} is not a station fingerprint: give all 64 hex digits, or at least the first "
            f"{MIN_FINGERPRINT_DIGITS} (the groups read aloud at pairing)"
        )
    return fp


def verify_bundle(
    bundle: Any,
    trusted_fingerprints: Sequence[str],
    other_checkpoint: tuple[Signed, Signed] | None = None,
    *,
    other_certs: Mapping[str, Sequence[SignedCert]] | None = None,
) -> BundleReport:
    """Verify a bundle against station fingerprints given from outside it.

    Never trusts the bundle's own word for which keys are whose: each station's root key must hash
    to a fingerprint the verifier gave, or nothing is verified at all. Then the whole transcript is
    checked by ``ledger.verify.verify_line``, and, if ``other_checkpoint`` (a proposal and its
    cosign, e.g. from ``parse_checkpoint``) is given, the bundle's chains are checked against its
    tree heads. ``other_certs`` may add key certificates for keys the bundle does not hold (a key
    rotated after the export); they too count only if they verify under the trusted roots.
    Problems in the bundle are reported, never raised; a malformed fingerprint raises ``BundleError``.
    """
    given = [normalize_fingerprint(f) for f in trusted_fingerprints]
    if not given:
        raise BundleError("give the fingerprints of both stations (from outside the bundle) to verify it against")
    try:
        parsed = _parse(bundle)
    except _Bad as exc:
        line = bundle.get("line") if isinstance(bundle, dict) else None
        line = line if isinstance(line, str) else "?"
        return BundleReport(line=line, names={}, trusted=False, problems=[exc.problem])
    report = BundleReport(
        line=parsed.line, names={}, trusted=False, exported_by=parsed.exported_by, exported_at=parsed.exported_at
    )
    roots = _trusted_roots(parsed, given, report)
    if roots is None:
        return report
    report.trusted = True
    report.names = {s.fingerprint: _certified_name(s, roots[s.fingerprint], report) for s in parsed.stations}
    if len(set(report.names.values())) < 2:  # two stations that chose one name stay apart in the report
        report.names = {fp: f"{name} ({fp[:8]})" for fp, name in report.names.items()}
    if parsed.exported_by not in roots:
        report.problems.append(Problem("bundle exported_by", "names a station that is not one of this line's two"))
    _check_order(parsed, report)
    data = LineData(
        line=parsed.line,
        names=report.names,
        certs={s.fingerprint: s.certs for s in parsed.stations},
        chains={s.fingerprint: s.chain for s in parsed.stations},
        receipts=parsed.receipts,
        checkpoints=parsed.checkpoints,
        equivocations=parsed.equivocations,
    )
    r = verify_line(data, roots)
    report.line_report = r
    report.receipted = dict(r.receipted)
    report.redacted = _redacted(data, r)
    if r.last_checkpoint is not None:
        report.last_cosign_time = _cosign_time(data, r.last_checkpoint.n)
    if parsed.recordings:
        _check_recordings(parsed, data, r, report)
    if other_checkpoint is not None:
        extra = {fp: [*data.certs.get(fp, []), *(other_certs or {}).get(fp, [])] for fp in roots}
        # Under the roots the chains established (the pinned one and each confirmed rotation), by
        # the gate's rule: the same roots step 4 trusted a certificate under (BUNDLE.md section 4).
        trusted = {fp: r.certifying_roots.get(fp, [root]) for fp, root in roots.items()}
        report.consistency = _check_against(data, r, keys_certified_by(trusted, extra), other_checkpoint)
    return report


def _trusted_roots(parsed: _Parsed, given: list[str], report: BundleReport) -> dict[str, bytes] | None:
    """Each station's root must hash to the fingerprint it claims and to one the verifier gave."""
    roots: dict[str, bytes] = {}
    shown = ", ".join(identity.show_fingerprint(g.ljust(64, "0")) for g in given)  # g has >= 32 digits
    for s in parsed.stations:
        actual = identity.fingerprint(s.root)
        who = f"station {s.name!r} (as the bundle calls it)"
        if actual != s.fingerprint:
            report.problems.append(Problem(
                f"bundle, {who}",
                f"its root key hashes to {identity.show_fingerprint(actual)}, not to the fingerprint "
                f"{identity.show_fingerprint(s.fingerprint)} it claims: root keys were swapped or replaced",
            ))  # fmt: skip
        elif not any(actual.startswith(g) for g in given):
            report.problems.append(Problem(
                f"bundle, {who}",
                f"its root fingerprint {identity.show_fingerprint(actual)} is not one of the fingerprints given "
                f"({shown}): this bundle is not from the stations you trust, or a root key was replaced",
            ))  # fmt: skip
        else:
            roots[actual] = s.root
    return roots if len(roots) == 2 else None


def _certified_name(s: _Station, root: bytes, report: BundleReport) -> str:
    """The name the station's root signed into its key certificates; the bundle's own is only a claim."""
    for c in s.certs:
        try:
            name = c.verify(root).name
        except VerificationError:
            continue
        if name != s.name:
            report.problems.append(Problem(
                f"bundle, station {name}",
                f"is called {s.name!r} in the bundle, but its root certified the name {name!r}",
            ))  # fmt: skip
        return name
    return f"{s.name} (name not certified)"


def _check_order(parsed: _Parsed, report: BundleReport) -> None:
    """Find entries moved within a chain (each still next to its own seq), which verify_line would
    see as a gap: the first entry out of place must name a seq that the chain lists later."""
    for s in parsed.stations:
        seqs = [row.seq for row in s.chain]
        for i, seq in enumerate(seqs, start=1):
            if seq != i:
                if i in seqs[i:]:
                    report.problems.append(Problem(
                        f"line {parsed.line[:8]}, {report.names[s.fingerprint]} chain, entry {i}",
                        f"holds seq {seq}, and seq {i} comes later: entries were swapped or reordered",
                    ))  # fmt: skip
                break


def _redacted(data: LineData, r: LineReport) -> list[str]:
    out: list[str] = []
    raws = [row.raw for fp, rows in data.chains.items() for row in rows[: r.chain_sizes.get(fp, 0)]]
    raws += [raw for _, _, a, b in data.equivocations for raw in (a, b)]
    for raw in raws:
        try:
            env: RawEnvelope = split(raw)
        except EncodingError:
            continue
        if env.body_bytes is None and env.id not in out:
            out.append(env.id)
    return out


def _check_recordings(parsed: _Parsed, data: LineData, r: LineReport, report: BundleReport) -> None:
    """Each carried recording against its station's CALL_AUDIO among the verified envelopes
    (``gate.accept_recording`` is the rule)."""
    audio: dict[tuple[str, str], kinds.CallAudio] = {}  # (station, call) -> its verified CALL_AUDIO
    for fp, rows in data.chains.items():
        for row in rows[: r.chain_sizes.get(fp, 0)]:
            try:
                env = split(row.raw)
                kind = canonical.decode_object(env.header_bytes, "header")["kind"]
                if env.body_bytes is None or kind != "CALL_AUDIO":
                    continue
                body = kinds.CallAudio.parse(canonical.decode_object(env.body_bytes, "body")["content"])
            except (VerificationError, KeyError, TypeError):
                continue
            audio.setdefault((fp, body.ring.id), body)
    for i, (station, call, direction, ogg) in enumerate(parsed.recordings):
        where = f"bundle recordings[{i}]"
        signed = audio.get((station, call))
        if station not in r.chain_sizes or signed is None:
            report.problems.append(Problem(where, f"no verified CALL_AUDIO of call {call[:12]} by that station"))
            continue
        peer = next(fp for fp in r.chain_sizes if fp != station)
        try:
            rec = accept_recording(ogg, signed, station, peer)
        except VerificationError as exc:
            report.problems.append(Problem(where, str(exc)))
            continue
        if (rec.call, rec.direction) != (call, direction):
            report.problems.append(Problem(where, f"the file is the {rec.direction} recording of call "
                                                  f"{rec.call[:12]}, not what the bundle says"))  # fmt: skip
            continue
        cut = " (interrupted)" if signed.interrupted else ""
        report.recordings.append(f"{report._name(station)} {direction} {call[:12]}{cut}")


def _cosign_time(data: LineData, n: int) -> int | None:
    for k, _, cosign in data.checkpoints:
        if k == n:
            try:
                return Cosign.peek(cosign).time
            except VerificationError:
                return None
    return None


def _check_against(
    data: LineData, r: LineReport, keys: dict[str, dict[str, bytes]], other: tuple[Signed, Signed]
) -> Consistency:
    """The bundle's chains against a co-signed checkpoint from outside it (RFC 9162 consistency)."""
    proposal, cosign = other
    try:
        peek, cpeek = Checkpoint.peek(proposal), Cosign.peek(cosign)
    except VerificationError as exc:
        c = Consistency(0, 0, 0)
        c.problems.append(Problem("checkpoint given", f"is not a checkpoint and its countersignature: {exc}"))
        return c
    c = Consistency(peek.n, peek.time, cpeek.time)
    at = f"checkpoint {peek.n} given"

    def fail(what: str) -> Consistency:
        c.problems.append(Problem(at, what))
        return c

    stations = set(data.chains)
    try:
        cp = Checkpoint.open(proposal, keys[peek.by][peek.key])
        cs = Cosign.open(cosign, keys[cpeek.by][cpeek.key])
    except KeyError:
        return fail("is signed with a key that neither trusted root certified (forged, or give its certificates)")
    except VerificationError as exc:
        return fail(f"{exc} (altered or forged checkpoint)")
    if cp.line != data.line or cs.line != data.line:
        return fail(f"is for line {cp.line[:8]}, not this bundle's line {data.line[:8]}")
    if cs.checkpoint != proposal.digest(Checkpoint.DOMAIN) or cs.by == cp.by or {cp.by, cs.by} != stations:
        return fail("is not countersigned by the other station of this line")
    if {h.station for h in cp.heads} != stations:
        return fail("covers chains of other stations than this line's two")
    held = {n: p for n, p, _ in data.checkpoints[: r.checkpoints]}
    if cp.n in held and held[cp.n].digest(Checkpoint.DOMAIN) != proposal.digest(Checkpoint.DOMAIN):
        fail(
            f"SPLIT VIEW: both stations signed a different checkpoint {cp.n} from the one in the bundle: "
            "two histories were signed"
        )
    last = r.last_checkpoint
    if last is not None and cp.n > last.n:  # a later checkpoint must extend the bundle's (gate rule)
        try:
            extends(last, held[last.n].digest(Checkpoint.DOMAIN), cp)
        except VerificationError as exc:
            fail(f"does not extend the bundle's checkpoints: {exc}")
    for h in sorted(cp.heads, key=lambda h: (r.names.get(h.station, ""), h.station)):
        name = r.names.get(h.station, h.station[:12])
        size = r.chain_sizes.get(h.station, 0)
        state = "consistent"
        if h.size > size:
            state = "cut"
            fail(
                f"the bundle's tail was cut: the other side holds a checkpoint over {h.size} envelopes of {name}, "
                f"the bundle has {size}"
            )
        else:
            try:
                _consistent(r.logs.get(h.station, merkle.MerkleLog()), h.size, bytes.fromhex(h.root))
            except MerkleError as exc:
                state = "split"
                fail(
                    f"SPLIT VIEW: the checkpoint's tree head of {name} at size {h.size} is not a prefix of the "
                    f"bundle's chain ({exc}): the bundle shows a different history from the one both stations signed"
                )
        c.chains.append(ChainConsistency(h.station, name, h.size, size, state))
    return c


def _consistent(log: merkle.MerkleLog, size: int, root: bytes) -> None:
    """Check, by an RFC 9162 consistency proof from the checkpoint's head to the bundle's whole
    chain, that the checkpoint's tree is a prefix of the bundle's. Raises MerkleError if not."""
    if size == 0:
        if root != merkle.EMPTY_ROOT:
            raise MerkleError("an empty chain has the empty root")
        return
    proof = log.consistency_proof(size, log.size)
    merkle.verify_consistency(size, log.size, root, log.root(), proof)


__all__ = [
    "BUNDLE_FORMAT",
    "CHECKPOINT_FORMAT",
    "BundleError",
    "BundleReport",
    "ChainConsistency",
    "CheckpointFile",
    "Consistency",
    "build_bundle",
    "export_checkpoint",
    "normalize_fingerprint",
    "parse_checkpoint",
    "read_bundle",
    "verify_bundle",
    "write_bundle",
]
