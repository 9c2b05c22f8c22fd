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

from redline import canonical, identity, merkle
from redline.envelope import split
from redline.errors import (
    CertificateError,
    CheckpointChainError,
    CheckpointCoverageError,
    CheckpointNumberError,
    EncodingError,
    NotEquivocationError,
    PrevLinkError,
    ReceiptBeyondChainError,
    ReceiptMismatchError,
    SchemaError,
    SeenBackwardsError,
    SeenBeyondError,
    SeenIdError,
    SeqOrderError,
    SignatureError,
    UnknownKeyError,
    VerificationError,
    WrongLineError,
    WrongSenderError,
)
from redline.gate import TrustedLine, verified_keys
from redline.identity import SignedCert
from redline.statements import Checkpoint, Receipt, Signed


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
    # Signed statements that contradict the transcript (a receipt of another envelope at a seq):
    # evidence against a station, listed apart so a report never drops it.
    evidence: list[Problem] = field(default_factory=list)
    receipted: dict[str, int] = field(default_factory=dict)  # per chain, the highest seq the other receipted

    @property
    def ok(self) -> bool:
        return not self.problems

    def tail(self, station: str) -> int:
        """Envelopes held beyond the co-signed prefix: signed by one side only, so far."""
        return self.chain_sizes.get(station, 0) - self.cosigned_sizes.get(station, 0)


class _Replay:
    """The chains as the replay accepted them: ids (32 bytes each, not hex strings: a million
    envelopes cost 32 MB here) and the RFC 9162 tree per chain. The gate reads them back."""

    def __init__(self, stations: Sequence[str]) -> None:
        self.ids: dict[str, bytearray] = {fp: bytearray() for fp in stations}
        self.logs: dict[str, merkle.MerkleLog] = {fp: merkle.MerkleLog() for fp in stations}

    def add(self, station: str, envelope_id: str) -> None:
        raw = bytes.fromhex(envelope_id)
        self.ids[station] += raw
        self.logs[station].append(merkle.leaf_hash(raw))

    def size(self, station: str) -> int:
        return len(self.ids[station]) // 32

    def id_at(self, station: str, seq: int) -> str | None:
        ids = self.ids.get(station)
        if ids is None or not 1 <= seq <= len(ids) // 32:
            return None
        return ids[(seq - 1) * 32 : seq * 32].hex()

    def root_at(self, station: str, size: int) -> bytes | None:
        log = self.logs.get(station)
        return log.root(size) if log is not None and size <= log.size else None


def verify_line(data: LineData, roots: dict[str, bytes]) -> LineReport:
    """Verify one line against root public keys given from outside (fingerprint -> key), by
    replaying everything it holds through the trust gate (``gate.TrustedLine``)."""
    report = LineReport(data.line, data.names)
    stations = sorted(data.chains)
    for fp in stations:
        if fp not in roots:
            report.problems.append(Problem(_name(data, fp), "no trusted root key was given for this station"))
            return report
        if identity.fingerprint(roots[fp]) != fp:
            report.problems.append(Problem(_name(data, fp), "the root key given does not match its fingerprint"))
            return report
    if len(stations) != 2:
        report.problems.append(Problem(f"line {data.line[:8]}", "a line's transcript holds exactly two chains"))
        return report
    replay = _Replay(stations)
    gate = TrustedLine(data.line, _verified_keys(data, roots, report), replay, roots=roots)
    _replay_chains(data, gate, replay, report)
    for fp in stations:
        report.logs[fp] = replay.logs[fp]
    _verify_equivocations(data, gate, report)
    _verify_receipts(data, gate, report)
    report.receipted = dict(gate.receipted)
    _verify_checkpoints(data, gate, report)
    return report


def _name(data: LineData, fp: str) -> str:
    return f"line {data.line[:8]}, {data.names.get(fp, fp[:12])}"


def _verified_keys(data: LineData, roots: dict[str, bytes], report: LineReport) -> dict[str, dict[str, bytes]]:
    """Every certificate the pinned roots signed; each one that does not verify is a problem."""
    keys: dict[str, dict[str, bytes]] = {fp: {} for fp in data.chains}
    for fp, certs in data.certs.items():
        for i, signed in enumerate(certs):
            try:
                for station, held in verified_keys({fp: roots[fp]}, {fp: [signed]}).items():
                    keys[station].update(held)
            except (CertificateError, KeyError) as exc:
                report.problems.append(
                    Problem(f"{_name(data, fp)} key certificate {i + 1}", f"not signed by the pinned root: {exc}")
                )
    return keys


def _replay_chains(data: LineData, gate: TrustedLine, replay: _Replay, report: LineReport) -> None:
    """Both chains through the gate in causal order: an envelope goes in once the envelope of
    the other chain it says it had seen is in. Honest transcripts always have such an order (a
    station only sees what was sent before); when no chain can go on, the next envelope goes in
    anyway and the gate names what is wrong with it, unless the other chain already broke before
    what it had seen (then that break is the problem, reported there)."""
    stations = sorted(data.chains)
    pos = {fp: 0 for fp in stations}
    stopped: set[str] = set()
    while True:
        ready = [fp for fp in stations if fp not in stopped and pos[fp] < len(data.chains[fp])]
        if not ready:
            break
        unblocked = [fp for fp in ready if _seen_seq(data.chains[fp][pos[fp]].raw) <= replay.size(gate.other(fp))]
        fp = unblocked[0] if unblocked else ready[0]
        if not unblocked and gate.other(fp) in stopped:
            stopped.add(fp)
            continue
        row, expect = data.chains[fp][pos[fp]], pos[fp] + 1
        problem = _accept_row(gate, fp, row, expect)
        if problem is not None:
            report.problems.append(Problem(f"{_name(data, fp)} chain, entry {expect}", problem))
            stopped.add(fp)
            continue
        replay.add(fp, row.id)
        pos[fp] += 1
    for fp in stations:
        report.chain_sizes[fp] = pos[fp]


def _seen_seq(raw: bytes) -> int:
    try:
        seen = canonical.decode_object(split(raw).header_bytes, "envelope header").get("seen")
        value = seen.get("seq") if isinstance(seen, dict) else 0
        return value if isinstance(value, int) else 0
    except VerificationError:
        return 0  # the gate will say what is wrong with it


def _accept_row(gate: TrustedLine, fp: str, row: StoredRow, expect: int) -> str | None:
    """One stored row through the gate; a problem in words, or None. Index columns that disagree
    with the signed bytes are storage damage, told apart from what the gate refuses."""
    try:
        env = gate.accept_envelope(row.raw, sender=fp, redacted_ok=True)
    except SeqOrderError as exc:
        try:
            signed_seq = canonical.decode_object(split(row.raw).header_bytes, "envelope header")["seq"]
        except (VerificationError, KeyError):
            return f"{exc}"
        if row.seq != expect and signed_seq == row.seq:
            return f"seq {expect} is missing: the entry before seq {row.seq} was deleted"
        return f"stored as seq {row.seq} but signed as seq {signed_seq}: entries were swapped or renumbered"
    except PrevLinkError:
        return "does not name the previous envelope as prev: the chain was cut or reordered"
    except SeenBeyondError as exc:
        return f"{exc}".replace("which was never sent or is not held", "which the transcript does not hold")
    except (WrongLineError, WrongSenderError, SeenBackwardsError, SeenIdError) as exc:
        return str(exc)
    except VerificationError as exc:
        return f"{exc} (edited, forged or corrupted)"
    if row.seq != env.seq:
        return f"stored as seq {row.seq} but signed as seq {env.seq}: entries were swapped or renumbered"
    if row.id != env.id:
        return f"stored id {row.id[:12]} is not the envelope's id {env.id[:12]}"
    return None


def _verify_equivocations(data: LineData, gate: TrustedLine, report: LineReport) -> None:
    for sender, seq, a, b in data.equivocations:
        at = f"{_name(data, sender)}, seq {seq}"
        try:
            ea, eb = gate.check_equivocation(a, b)
        except NotEquivocationError as exc:
            report.problems.append(Problem(at, f"equivocation record proves nothing: {exc}"))
            continue
        except VerificationError as exc:
            report.problems.append(Problem(at, f"equivocation evidence does not verify: {exc}"))
            continue
        if ea.seq != seq or ea.header.sender != sender:
            report.problems.append(Problem(at, "equivocation record does not hold two envelopes at this seq"))
            continue
        report.problems.append(
            Problem(at, f"EQUIVOCATION: the station signed two different envelopes ({ea.id[:12]} and "
                        f"{eb.id[:12]}) at the same seq; this direction is halted")
        )  # fmt: skip


def _verify_receipts(data: LineData, gate: TrustedLine, report: LineReport) -> None:
    """Every receipt through the gate. One that contradicts the chain is evidence and is reported
    as such; one for a chain that already failed earlier is not counted (reported there)."""
    for i, signed in enumerate(data.receipts, start=1):
        at = f"line {data.line[:8]}, receipt {i}"
        try:
            gate.accept_receipt(signed)
        except (ReceiptBeyondChainError, ReceiptMismatchError) as exc:
            peek = Receipt.peek(signed)
            if peek.seq <= len(data.chains.get(peek.of, [])) and report.chain_sizes.get(peek.of, 0) < peek.seq:
                continue  # that chain already failed before this seq; reported there
            by, of = data.names.get(peek.by, peek.by[:12]), data.names.get(peek.of, peek.of[:12])
            if isinstance(exc, ReceiptMismatchError):
                what = (f"{by} receipted a different envelope ({peek.id[:12]}) at {of} {peek.seq} from the one "
                        "the transcript holds: the chain was re-signed after it was receipted")  # fmt: skip
            else:
                what = f"receipts seq {peek.seq} of {of}, which the transcript does not hold with that id"
            report.problems.append(Problem(at, what))
            report.evidence.append(Problem(at, what))
            continue
        except VerificationError as exc:
            report.problems.append(Problem(at, str(exc)))
            continue
        report.receipts += 1


def _verify_checkpoints(data: LineData, gate: TrustedLine, report: LineReport) -> None:
    for n, proposal, cosign in data.checkpoints:
        at = f"line {data.line[:8]}, checkpoint {n}"
        try:
            cp = gate.accept_checkpoint(proposal, cosign)
        except (CheckpointNumberError, CheckpointChainError) as exc:
            report.problems.append(Problem(at, f"does not extend the previous checkpoint: {exc}"))
            return
        except CheckpointCoverageError as exc:
            what = str(exc)
            for head in Checkpoint.peek(proposal).heads:
                held = report.chain_sizes.get(head.station, 0)
                if head.size > held:
                    what = f"covers {head.size} envelopes of {data.names.get(head.station, '?')} but only {held} verify"
            report.problems.append(Problem(at, what))
            return
        except (SignatureError, UnknownKeyError, EncodingError, SchemaError) as exc:
            report.problems.append(Problem(at, f"{exc} (altered or forged checkpoint)"))
            return
        except VerificationError as exc:
            report.problems.append(Problem(at, str(exc)))
            return
        if cp.n != n:
            report.problems.append(Problem(at, "is numbered differently from where it is stored"))
            return
        report.checkpoints += 1
        report.last_checkpoint = cp
        report.cosigned_sizes = {h.station: h.size for h in cp.heads}


def first_problem(reports: Sequence[LineReport]) -> Problem | None:
    for r in reports:
        if r.problems:
            return r.problems[0]
    return None
