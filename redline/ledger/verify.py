"""Transcript verification from bytes (python-tuf's rule: only verified state is kept).

``verify_line`` takes everything a store or a bundle holds for one line, as bytes, plus the two
root keys given from outside, and walks it: key certificates, every envelope (canonical form,
body hash, signature, line, sender, seq, prev, id), seen-links across the chains, equivocation
evidence, receipts and co-signed checkpoints against the RFC 9162 heads it rebuilt itself. It
reports problems in words an operator can act on, first problem first; no database here.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

from redline import identity, merkle
from redline.envelope import KeyLookup, open_envelope, split
from redline.errors import UnknownKeyError, VerificationError
from redline.identity import SignedCert
from redline.statements import Checkpoint, Cosign, Receipt, Signed


class Held(NamedTuple):
    """What the cross-chain checks need of a verified envelope (not the envelope: at a million
    envelopes, keeping bodies and parsed headers would cost gigabytes)."""

    seq: int
    id: str
    seen_seq: int
    seen_id: str | None


@dataclass(frozen=True)
class StoredRow:
    """One stored envelope: the index columns as stored, and the bytes."""

    seq: int
    id: str
    raw: bytes


@dataclass(frozen=True, kw_only=True)
class LineData:
    line: str
    names: dict[str, str]  # station fingerprint -> name (for messages only)
    certs: dict[str, list[SignedCert]]  # station fingerprint -> certificates held
    chains: dict[str, list[StoredRow]]  # station fingerprint -> rows in stored seq order
    receipts: list[Signed] = field(default_factory=list)
    checkpoints: list[tuple[int, Signed, Signed]] = field(default_factory=list)
    equivocations: list[tuple[str, int, bytes, bytes]] = field(default_factory=list)  # sender, seq, a, b


@dataclass(frozen=True)
class Problem:
    where: str
    what: str

    def __str__(self) -> str:
        return f"{self.where}: {self.what}"


@dataclass
class LineReport:
    line: str
    names: dict[str, str]
    chain_sizes: dict[str, int] = field(default_factory=dict)  # verified prefix per chain
    cosigned_sizes: dict[str, int] = field(default_factory=dict)  # per chain, at the last checkpoint
    checkpoints: int = 0
    receipts: int = 0
    last_checkpoint: Checkpoint | None = None
    logs: dict[str, merkle.MerkleLog] = field(default_factory=dict)
    problems: list[Problem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def tail(self, station: str) -> int:
        """Envelopes held beyond the co-signed prefix: signed by one side only, so far."""
        return self.chain_sizes.get(station, 0) - self.cosigned_sizes.get(station, 0)


def verify_line(data: LineData, roots: dict[str, bytes]) -> LineReport:
    """Verify one line against root public keys given from outside (fingerprint -> key)."""
    report = LineReport(data.line, data.names)
    stations = sorted(data.chains)
    for fp in stations:
        if fp not in roots:
            report.problems.append(Problem(_name(data, fp), "no trusted root key was given for this station"))
            return report
        if identity.fingerprint(roots[fp]) != fp:
            report.problems.append(Problem(_name(data, fp), "the root key given does not match its fingerprint"))
            return report
    keys = _verified_keys(data, roots, report)

    def lookup(sender: str, key_id: str) -> bytes:
        try:
            return keys[sender][key_id]
        except KeyError:
            raise UnknownKeyError(
                f"signed with key {key_id}, which the station's pinned root never certified (substituted key?)"
            ) from None

    envelopes: dict[str, list[Held]] = {}
    for fp in stations:
        envelopes[fp] = _verify_chain(data, fp, lookup, report)
    _verify_seen(data, envelopes, report)
    _verify_equivocations(data, lookup, report)
    _verify_receipts(data, keys, envelopes, report)
    _verify_checkpoints(data, keys, report)
    return report


def _name(data: LineData, fp: str) -> str:
    return f"line {data.line[:8]}, {data.names.get(fp, fp[:12])}"


def _verified_keys(data: LineData, roots: dict[str, bytes], report: LineReport) -> dict[str, dict[str, bytes]]:
    keys: dict[str, dict[str, bytes]] = {fp: {} for fp in roots}
    for fp, certs in data.certs.items():
        for i, signed in enumerate(certs):
            try:
                cert = signed.verify(roots[fp])
            except (VerificationError, KeyError) as exc:
                report.problems.append(
                    Problem(f"{_name(data, fp)} key certificate {i + 1}", f"not signed by the pinned root: {exc}")
                )
                continue
            if cert.role == "signing":
                keys[fp][cert.key_id] = bytes.fromhex(cert.key)
    return keys


def _verify_chain(data: LineData, fp: str, lookup: KeyLookup, report: LineReport) -> list[Held]:
    chain: list[Held] = []
    log = merkle.MerkleLog()
    report.logs[fp] = log
    where = f"{_name(data, fp)} chain"
    prev: str | None = None
    for expect, row in enumerate(data.chains[fp], start=1):
        at = f"{where}, entry {expect}"
        try:
            env = open_envelope(split(row.raw), lookup)
        except VerificationError as exc:
            report.problems.append(Problem(at, f"{exc} (edited, forged or corrupted)"))
            break
        h = env.header
        problem = None
        if h.line != data.line:
            problem = f"belongs to line {h.line[:8]}, not this one (replayed from another line)"
        elif h.sender != fp:
            problem = f"was signed by station {h.sender[:12]}, not by this chain's station"
        elif row.seq != expect and h.seq == row.seq:
            problem = f"seq {expect} is missing: the entry before seq {row.seq} was deleted"
        elif h.seq != expect or row.seq != h.seq:
            problem = f"stored as seq {row.seq} but signed as seq {h.seq}: entries were swapped or renumbered"
        elif row.id != env.id:
            problem = f"stored id {row.id[:12]} is not the envelope's id {env.id[:12]}"
        elif h.prev != prev:
            problem = "does not name the previous envelope as prev: the chain was cut or reordered"
        if problem:
            report.problems.append(Problem(at, problem))
            break
        chain.append(Held(h.seq, env.id, h.seen_seq, h.seen_id))
        log.append(merkle.leaf_hash(bytes.fromhex(env.id)))
        prev = env.id
    report.chain_sizes[fp] = len(chain)
    return chain


def _verify_seen(data: LineData, envelopes: dict[str, list[Held]], report: LineReport) -> None:
    """Each envelope's ``seen`` must name an envelope the other chain holds, never going back."""
    stations = sorted(envelopes)
    if len(stations) != 2:
        return
    for fp, other_fp in (stations, stations[::-1]):
        other = envelopes[other_fp]
        other_complete = len(other) == len(data.chains[other_fp])
        last = 0
        for h in envelopes[fp]:
            at = f"{_name(data, fp)} chain, seq {h.seq}"
            problem = None
            if h.seen_seq < last:
                problem = f"seen goes back from seq {last} to {h.seen_seq}"
            elif h.seen_seq > len(other):
                if not other_complete:
                    break  # the other chain failed before this point and is reported there
                problem = (
                    f"says it had seen seq {h.seen_seq} of the other side, which the transcript does not hold "
                    "(entries deleted or the tail was cut)"
                )
            elif h.seen_seq and other[h.seen_seq - 1].id != h.seen_id:
                problem = f"names seq {h.seen_seq} of the other side with an id that is not the one held"
            if problem:
                report.problems.append(Problem(at, problem))
                return
            last = h.seen_seq


def _verify_equivocations(data: LineData, lookup: KeyLookup, report: LineReport) -> None:
    for sender, seq, a, b in data.equivocations:
        at = f"{_name(data, sender)}, seq {seq}"
        try:
            ea, eb = open_envelope(split(a), lookup), open_envelope(split(b), lookup)
        except VerificationError as exc:
            report.problems.append(Problem(at, f"equivocation evidence does not verify: {exc}"))
            continue
        if ea.seq == eb.seq == seq and ea.id != eb.id and ea.header.sender == eb.header.sender == sender:
            report.problems.append(
                Problem(at, f"EQUIVOCATION: the station signed two different envelopes ({ea.id[:12]} and "
                            f"{eb.id[:12]}) at the same seq; this direction is halted")
            )  # fmt: skip
        else:
            report.problems.append(Problem(at, "equivocation record does not hold two envelopes at one seq"))


def _signing_key(keys: dict[str, dict[str, bytes]], station: str, key_id: str) -> bytes:
    try:
        return keys[station][key_id]
    except KeyError:
        raise UnknownKeyError(f"key {key_id} of station {station[:12]} is not certified by its root") from None


def _verify_receipts(
    data: LineData, keys: dict[str, dict[str, bytes]], envelopes: dict[str, list[Held]], report: LineReport
) -> None:
    for i, signed in enumerate(data.receipts, start=1):
        at = f"line {data.line[:8]}, receipt {i}"
        try:
            peek = Receipt.peek(signed)
            receipt = Receipt.open(signed, _signing_key(keys, peek.by, peek.key))
        except VerificationError as exc:
            report.problems.append(Problem(at, str(exc)))
            return
        chain = envelopes.get(receipt.of, [])
        if receipt.line != data.line or receipt.seq > len(chain) or chain[receipt.seq - 1].id != receipt.id:
            if receipt.seq <= len(data.chains.get(receipt.of, [])) and receipt.line == data.line:
                continue  # that chain already failed earlier; reported there
            report.problems.append(
                Problem(at, f"receipts seq {receipt.seq} of {data.names.get(receipt.of, '?')}, which the transcript "
                            "does not hold with that id")
            )  # fmt: skip
            return
        report.receipts += 1


def _verify_checkpoints(data: LineData, keys: dict[str, dict[str, bytes]], report: LineReport) -> None:
    prev: Checkpoint | None = None
    prev_digest: str | None = None
    for n, proposal, cosign in data.checkpoints:
        at = f"line {data.line[:8]}, checkpoint {n}"
        try:
            cp = Checkpoint.peek(proposal)
            Checkpoint.open(proposal, _signing_key(keys, cp.by, cp.key))
            cs = Cosign.peek(cosign)
            Cosign.open(cosign, _signing_key(keys, cs.by, cs.key))
        except VerificationError as exc:
            report.problems.append(Problem(at, f"{exc} (altered or forged checkpoint)"))
            return
        digest = proposal.digest(Checkpoint.DOMAIN)
        stations = {h.station for h in cp.heads}
        problem = None
        if cp.n != n or cp.line != data.line or cs.line != data.line:
            problem = "is numbered or addressed differently from where it is stored"
        elif cp.prev != prev_digest:
            problem = "does not extend the previous checkpoint"
        elif cs.checkpoint != digest or cs.by == cp.by or cs.by not in stations or stations != set(data.chains):
            problem = "is not countersigned by the other station of this line"
        if problem is None:
            for head in cp.heads:
                who = data.names.get(head.station, "?")
                log = report.logs.get(head.station)
                held = report.chain_sizes.get(head.station, 0)
                if log is None or head.size > held:
                    problem = f"covers {head.size} envelopes of {who} but only {held} verify"
                elif log.root(head.size).hex() != head.root:
                    problem = f"tree head of {who} at size {head.size} does not match the chain"
                elif prev is not None and head.size < prev.head(head.station).size:
                    problem = "shrinks a chain that an earlier checkpoint covered"
                if problem:
                    break
        if problem:
            report.problems.append(Problem(at, problem))
            return
        prev, prev_digest = cp, digest
        report.checkpoints += 1
        report.last_checkpoint = cp
        report.cosigned_sizes = {h.station: h.size for h in cp.heads}


def first_problem(reports: Sequence[LineReport]) -> Problem | None:
    for r in reports:
        if r.problems:
            return r.problems[0]
    return None
