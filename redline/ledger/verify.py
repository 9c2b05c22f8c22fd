"""Transcript verification from bytes (python-tuf's rule: only verified state is kept).

``verify_line`` takes everything a store or a bundle holds for one line, as bytes, plus the two
root keys given from outside, and walks it: key certificates, every envelope (canonical form,
body hash, signature, line, sender, seq, prev, id), seen-links across the chains, equivocation
evidence, receipts and co-signed checkpoints against the RFC 9162 heads it rebuilt itself. It
reports problems in words an operator can act on, first problem first; no database here.

It reads a line through ``LineSource``: a bundle's or a test's ``LineData`` (lists in memory) or a
store's rows (``ledger.sqlite.StoredLine``), streamed: what stays in memory is 32 bytes of id and
about 64 bytes of Merkle tree per envelope, never the envelopes. With ``workers``, the signatures
(``open_envelope``: canonical form, body hash, Ed25519; a pure function of the bytes and the keys)
are checked ahead of the replay in worker processes, one per core, which hand back each envelope
as they opened it (header, decoded content, the Merkle leaf of its id: nothing is parsed twice);
every rule that decides trust still runs in the gate, in this process, in causal order, on the
very envelopes the workers opened.
"""

from __future__ import annotations

import marshal
import os
import pickle
import socket
import struct
import threading
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from itertools import islice
from typing import TYPE_CHECKING, Any, NamedTuple

from redline import canonical, identity, merkle
from redline.envelope import Envelope, Header, KeyLookup, open_envelope, peek_seen_seq, split
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
    RevokedEvidenceError,
    SchemaError,
    SeenBackwardsError,
    SeenBeyondError,
    SeenIdError,
    SeqOrderError,
    SignatureError,
    StorageError,
    UnknownKeyError,
    VerificationError,
    WrongLineError,
    WrongSenderError,
)
from redline.gate import Flagged, FlaggedStatement, TrustedLine, claimed_roots, verified_keys
from redline.identity import SignedCert
from redline.ledger.model import ChainPart as ChainPart
from redline.ledger.model import LineData as LineData
from redline.ledger.model import LineSource as LineSource
from redline.ledger.model import StoredRow as StoredRow
from redline.statements import Checkpoint, Receipt

if TYPE_CHECKING:  # multiprocessing is imported when workers start: the CLI's other commands skip it
    import multiprocessing.process
    import multiprocessing.queues


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
    # Runs of envelopes signed by a key their station's root revoked (a REVOKE, PROTOCOL.md 5.9):
    # verified and kept, flagged so that no reader takes them for the station's word.
    flagged: list[Flagged] = field(default_factory=list)
    # Receipts and checkpoint signatures by such a key after the checkpoint its REVOKE names: the
    # same rule (``TrustedLine._revoked_statement``); a flagged receipt is not counted as receipted.
    flagged_statements: list[FlaggedStatement] = field(default_factory=list)
    # Every person signature checked up to its station's root (PROTOCOL.md 5.10), in words.
    people: list[str] = field(default_factory=list)
    people_invalid: int = 0
    # ``redline verify`` on a store: the station's own call recordings that match the digests it
    # signed in CALL_AUDIO (recording.check_kept), and what is only noted (a recording not kept).
    recordings: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    # Each root rotation (a ROOT, PROTOCOL.md 5.9) and whether the other station confirmed it, in words.
    roots: list[str] = field(default_factory=list)
    # Each station's trusted roots after the replay (``TrustedLine.certifying_roots``): what a
    # certificate from outside the chains (a checkpoint file's) is checked under.
    certifying_roots: dict[str, list[bytes]] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.problems

    def tail(self, station: str) -> int:
        """Envelopes held beyond the co-signed prefix: signed by one side only, so far."""
        return self.chain_sizes.get(station, 0) - self.cosigned_sizes.get(station, 0)

    def revoked(self, name: Callable[[str], str]) -> list[str]:
        """What a revoked key signed, in words (``name``: a station's name): the runs of envelopes,
        then the receipts and checkpoint signatures."""
        return [f.describe(name(f.station)) for f in self.flagged] + [
            s.describe(name(s.station)) for s in self.flagged_statements
        ]


class _Replay:
    """The chains as the replay accepted them: ids (32 bytes each, not hex strings: a million
    envelopes cost 32 MB here) and the RFC 9162 tree per chain. The gate reads them back."""

    def __init__(self, stations: Sequence[str]) -> None:
        self.ids: dict[str, bytearray] = {fp: bytearray() for fp in stations}
        self.logs: dict[str, merkle.MerkleLog] = {fp: merkle.MerkleLog() for fp in stations}

    def add(self, station: str, envelope_id: str, leaf: bytes | None = None) -> None:
        """``leaf``: the Merkle leaf hash of this id, when a worker process computed it already."""
        raw = bytes.fromhex(envelope_id)
        self.ids[station] += raw
        self.logs[station].append(merkle.leaf_hash(raw) if leaf is None else leaf)

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


def verify_line(
    data: LineSource, roots: dict[str, bytes], *, workers: int = 0, progress: Callable[[int], None] | None = None
) -> LineReport:
    """Verify one line against root public keys given from outside (fingerprint -> key), by
    replaying everything it holds through the trust gate (``gate.TrustedLine``). ``workers``: that
    many processes check signatures ahead of the replay (0: all in this process). ``progress``:
    called with how many envelopes of both chains have reached the replay so far, a batch at a time
    (of ``sum(data.held(fp))``; fewer in all when a chain breaks)."""
    report = LineReport(data.line, data.names)
    stations = data.stations()
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
    gate = TrustedLine(data.line, _verified_keys(data, roots, report), replay, roots=roots, people=True)
    with _openers(gate, data, workers) as opener:
        counted = _Counted(progress)
        chains = {fp: _ChainReader(opener.chain(data, fp), counted) for fp in stations}
        _replay_chains(data, chains, gate, replay, report)
    for fp in stations:
        report.logs[fp] = replay.logs[fp]
    report.flagged = gate.flagged()
    report.roots = gate.describe_roots(data.names)
    report.certifying_roots = {fp: gate.certifying_roots(fp) for fp in stations}
    if gate.people is not None:
        report.people = gate.people.describe(data.names)
        report.people_invalid = len(gate.people.invalid)
    _verify_equivocations(data, gate, report)
    _verify_receipts(data, gate, report)
    report.receipted = dict(gate.receipted)
    _verify_checkpoints(data, gate, report)
    report.flagged_statements = list(gate.flagged_statements)
    return report


def _certified(signed: SignedCert, root: bytes | None) -> bool:
    try:
        return root is not None and bool(signed.verify(root))
    except VerificationError:
        return False


def _stored(raw: bytes) -> Envelope | None:
    """A stored envelope read without its signature (its claims are only candidates here)."""
    try:
        r = split(raw)
        header = Header.from_obj(canonical.decode_object(r.header_bytes, "envelope header"))
    except VerificationError:
        return None
    return Envelope(header, r.header_bytes, r.body_bytes, r.sig, r.id)


def _name(data: LineSource, fp: str) -> str:
    return f"line {data.line[:8]}, {data.names.get(fp, fp[:12])}"


def _verified_keys(data: LineSource, roots: dict[str, bytes], report: LineReport) -> dict[str, dict[str, bytes]]:
    """Every certificate the pinned roots signed; each one that does not verify is a problem."""
    keys: dict[str, dict[str, bytes]] = {fp: {} for fp in data.stations()}
    later: dict[str, list[bytes]] = {}
    for fp, certs in data.certs.items():
        for i, signed in enumerate(certs):
            if fp not in later and not _certified(signed, roots.get(fp)):
                # Certificates under a later root (section 5.9, ROOT): the gate checks each where
                # the KEY naming it stands; read the roots the chain claims only when needed.
                rows = data.chain(fp) if fp in data.stations() else iter(())
                later[fp] = claimed_roots(e for e in (_stored(r.raw) for r in rows if b'"ROOT"' in r.raw) if e)
            try:
                for station, held in verified_keys({fp: roots[fp]}, {fp: [signed]}, later).items():
                    keys[station].update(held)
            except (CertificateError, KeyError) as exc:
                report.problems.append(
                    Problem(f"{_name(data, fp)} key certificate {i + 1}", f"not signed by the pinned root: {exc}")
                )
    return keys


# -- reading the chains, with signatures checked ahead in worker processes ---------------------------


class _Next(NamedTuple):
    """One stored row as the replay takes it."""

    seq: Any  # the seq column as stored (compared with the signed seq, never trusted)
    id: Any  # the id column as stored (likewise)
    seen: int  # the seen seq its header claims (0 if unreadable): the replay's causal order
    opened: Envelope | None  # opened by a worker; None: the gate opens ``raw`` (and names what is wrong)
    raw: bytes | None  # the stored bytes, when the gate is to open them (None: a worker opened them)
    leaf: bytes | None  # the Merkle leaf hash of the opened envelope's id, computed by the worker


PARALLEL_FROM = 20_000  # envelopes in a line: below this, starting worker processes costs more than it saves
BATCH = 512  # rows per task sent to a worker
AHEAD = 6  # tasks in flight per chain: enough to keep every worker busy, and little memory


def workers_for(data: LineSource) -> int:
    """How many worker processes should check ``data``'s signatures: one per core for a large line."""
    held = sum(data.held(fp) for fp in data.stations())
    return (os.cpu_count() or 1) if held >= PARALLEL_FROM else 0


class _Serial:
    """Opens nothing ahead: the gate does it all, in this process."""

    def chain(self, data: LineSource, station: str) -> Iterator[list[_Next]]:
        rows = data.chain(station)
        while batch := list(islice(rows, BATCH)):
            yield [_Next(row.seq, row.id, peek_seen_seq(row.raw), None, row.raw, None) for row in batch]


# A worker's answer to a task, on a socket of its own: the payload's length, the task's number and
# whether the rows follow (marshalled) or the exception that stopped it (pickled), then the payload.
# Bytes, not a pickled object; read in one blocking call (``_read_exactly``), so the thread taking
# it needs the interpreter lock once per answer, not once per socket buffer, which it had to win
# from the replay each time.
_ANSWER = struct.Struct(">QQB")
_ROWS, _RAISED = 0, 1
# Socket buffers that hold a whole answer or more, where the system allows it: a worker then hands
# its answer to the kernel and goes on to its next task whenever the verifier's thread gets to it.
_SOCKET_BUFFER = 4 << 20


def _read_exactly(sock: socket.socket, into: bytearray) -> None:
    view, got = memoryview(into), 0
    while got < len(into):
        n = sock.recv_into(view[got:], len(into) - got, socket.MSG_WAITALL)
        if n == 0:
            raise EOFError("a verify worker closed its answers")
        got += n


class _Workers:
    """Worker processes that read and open the chains' rows ahead of the replay. Tasks go into one
    queue that every worker takes from as soon as it is free (a worker slowed down, say by another
    process on its core, then holds up no task but its own); one thread per worker takes its answers
    off its socket as they come (the read itself runs without the interpreter lock), so a worker
    never waits for the replay to want its answer before it starts on the next task; the replay
    decodes an answer when it needs it."""

    def __init__(self, n: int, keys: dict[str, dict[str, bytes]]) -> None:
        # spawn, not fork: a forked child would hold copies of the store's SQLite descriptors, and
        # closing any of them drops this process's locks on the store (ledger/integrity.py).
        import multiprocessing

        ctx = multiprocessing.get_context("spawn")
        self._tasks = ctx.SimpleQueue()
        self._socks: list[socket.socket] = []  # answers, from each worker
        self._procs: list[multiprocessing.process.BaseProcess] = []
        self._arrived = threading.Condition()
        self._answers: dict[int, tuple[int, bytearray]] = {}  # task -> its answer, taken off a socket
        self._lost: BaseException | None = None
        for _ in range(n):
            ours, theirs = socket.socketpair()
            for end in (ours, theirs):  # room for whole answers (the kernel caps it at net.core.wmem_max)
                end.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, _SOCKET_BUFFER)
                end.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, _SOCKET_BUFFER)
            proc = ctx.Process(target=_worker, args=(self._tasks, theirs, keys), daemon=True)
            proc.start()
            theirs.close()
            self._socks.append(ours)
            self._procs.append(proc)
            threading.Thread(target=self._take, args=(ours,), daemon=True).start()
        self._sent = 0

    def _take(self, sock: socket.socket) -> None:
        head = bytearray(_ANSWER.size)
        try:
            while True:
                _read_exactly(sock, head)
                size, task, what = _ANSWER.unpack(head)
                payload = bytearray(size)
                _read_exactly(sock, payload)
                with self._arrived:
                    self._answers[task] = (what, payload)
                    self._arrived.notify_all()
        except (EOFError, OSError) as exc:
            with self._arrived:
                self._lost = self._lost or exc
                self._arrived.notify_all()

    def _stopped(self) -> StorageError | None:
        """A worker has gone (its tasks would never be answered)."""
        if any(not proc.is_alive() for proc in self._procs):
            return StorageError(f"a verify worker stopped: {self._lost!r}")
        return None

    def _submit(self, part: ChainPart) -> int:
        if (gone := self._stopped()) is not None:
            raise gone
        task = self._sent
        self._sent += 1
        self._tasks.put((task, part))
        return task

    def _result(self, task: int) -> list[_Next]:
        with self._arrived:
            while task not in self._answers:
                if self._lost is not None and (gone := self._stopped()) is not None:
                    raise gone
                self._arrived.wait(1.0)
            what, payload = self._answers.pop(task)
        if what == _RAISED:
            raised = pickle.loads(payload)
            assert isinstance(raised, BaseException)
            raise raised
        return _received(marshal.loads(payload))

    def chain(self, data: LineSource, station: str) -> Iterator[list[_Next]]:
        parts = data.chain_parts(station, BATCH)
        ahead: deque[int] = deque()
        while True:
            while len(ahead) < AHEAD and (part := next(parts, None)) is not None:
                ahead.append(self._submit(part))
            if not ahead:
                return
            yield self._result(ahead.popleft())

    def close(self) -> None:
        # A worker that died waiting for a task may have died holding the queue's lock: then the
        # others never see their stop either, and are not waited for.
        wait = 5.0 if self._stopped() is None else 0.2
        for _ in self._procs:
            with suppress(OSError):
                self._tasks.put(None)
        for proc in self._procs:
            proc.join(timeout=wait)
            if proc.is_alive():
                proc.kill()
                proc.join()
        self._tasks.close()
        for sock in self._socks:
            sock.close()


# What a worker answers per row, as plain values (marshal: several times cheaper than pickling
# objects, and both ends are the same interpreter): for a row ``open_envelope`` refused, the row
# (seq, id, raw), for the gate to open again; for the others the row's seq and id, the opened
# envelope's attributes with its header's (``Envelope.parsed`` included, so nobody decodes the
# body again) and the Merkle leaf hash of its id. No raw row travels back but those the gate opens.


def _answer_row(row: StoredRow, key: KeyLookup) -> tuple[Any, ...]:
    """What a worker answers for one row (see above)."""
    try:
        env = open_envelope(split(row.raw), key)
    except VerificationError:
        return (row.seq, row.id, row.raw)
    attrs = dict(env.__dict__)
    attrs["header"] = env.header.__dict__
    return (row.seq, row.id, attrs, merkle.leaf_hash(bytes.fromhex(env.id)))


def _received(rows: list[tuple[Any, ...]]) -> list[_Next]:
    """A worker's answer back into rows for the replay: each opened envelope rebuilt as unpickling
    it would, around the attributes it had there (the worker built and validated it; nothing here
    is parsed again)."""
    out: list[_Next] = []
    new, set_attrs = object.__new__, object.__setattr__
    for row in rows:
        if len(row) == 3:  # refused by open_envelope: the gate opens it again and says why
            seq, stored_id, raw = row
            out.append(_Next(seq, stored_id, peek_seen_seq(raw), None, raw, None))
            continue
        seq, stored_id, attrs, leaf = row
        header = new(Header)
        set_attrs(header, "__dict__", attrs["header"])
        attrs["header"] = header
        env = new(Envelope)
        set_attrs(env, "__dict__", attrs)
        out.append(_Next(seq, stored_id, header.seen_seq, env, None, leaf))
    return out


@contextmanager
def _openers(gate: TrustedLine, data: LineSource, workers: int) -> Iterator[_Serial | _Workers]:
    if workers <= 0:
        yield _Serial()
        return
    pool = _Workers(workers, gate.signing_keys())
    try:
        yield pool
    finally:
        pool.close()


class _Counted:
    """Envelopes that reached the replay, told to ``progress`` a batch at a time."""

    def __init__(self, progress: Callable[[int], None] | None) -> None:
        self.progress, self.n = progress, 0

    def add(self, n: int) -> None:
        self.n += n
        if self.progress is not None:
            self.progress(self.n)


class _ChainReader:
    """One chain's rows, each with its claimed seen seq (and, with workers, opened), in order."""

    def __init__(self, batches: Iterator[list[_Next]], counted: _Counted) -> None:
        self._batches = batches
        self._counted = counted
        self._batch: list[_Next] = []
        self._at = 0

    def peek(self) -> _Next | None:
        while self._at >= len(self._batch):
            batch = next(self._batches, None)
            if batch is None:
                return None
            self._batch, self._at = batch, 0
            self._counted.add(len(batch))
        return self._batch[self._at]

    def pop(self) -> None:
        self._at += 1


def _worker(
    tasks: multiprocessing.queues.SimpleQueue[Any], answers: socket.socket, keys: dict[str, dict[str, bytes]]
) -> None:
    """A worker process: read each part's rows and ``open_envelope`` them under the gate's keys;
    answer what the replay needs of those that open, the rows themselves for the others (the gate
    opens those again and names the rule broken)."""

    def key(station: str, key_id: str) -> bytes:
        try:
            return keys[station][key_id]
        except KeyError:
            raise UnknownKeyError(f"key {key_id} is not certified") from None

    _keep_freed_memory()
    while (task := tasks.get()) is not None:
        number, part = task
        try:
            what, payload = _ROWS, marshal.dumps([_answer_row(row, key) for row in part.rows()])
        except Exception as exc:  # a store that cannot be read: the replay raises it, as it would itself
            what, payload = _RAISED, pickle.dumps(exc)
        answers.sendall(_ANSWER.pack(len(payload), number, what))
        answers.sendall(payload)
    answers.close()


# glibc's malloc options (malloc.h): M_TRIM_THRESHOLD, M_MMAP_THRESHOLD
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3


def _keep_freed_memory() -> bool:
    """In a worker: let freed memory stay in the process for the next task instead of going back
    to the kernel. Each answer is about 1.7 MB (``marshal.dumps`` of 512 opened envelopes, about
    3 KB each); glibc maps such blocks apart and unmaps them when freed, or trims the heap, so every
    task faulted its answer's pages in again: the system time of a worker went from 3.5-4.1 to
    1.9-2.0 µs per envelope when this was set (220,000-envelope store, busy box; BENCHMARKS.md).
    Only where the C library is glibc; elsewhere nothing changes (False)."""
    import ctypes

    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    # a worker holds at most AHEAD answers' worth beyond its rows: some tens of megabytes, kept
    return bool(mallopt(_M_MMAP_THRESHOLD, 64 << 20)) and bool(mallopt(_M_TRIM_THRESHOLD, 256 << 20))


def _replay_chains(
    data: LineSource, chains: dict[str, _ChainReader], gate: TrustedLine, replay: _Replay, report: LineReport
) -> None:
    """Both chains through the gate in causal order: an envelope goes in once the envelope of
    the other chain it says it had seen is in. Honest transcripts always have such an order (a
    station only sees what was sent before); when no chain can go on, the next envelope goes in
    anyway and the gate names what is wrong with it, unless the other chain already broke before
    what it had seen (then that break is the problem, reported there)."""
    a, b = sorted(chains)  # two: verify_line checked
    pos = {a: 0, b: 0}  # envelopes accepted per chain (what the replay holds)
    stopped: set[str] = set()
    while True:
        next_a = None if a in stopped else chains[a].peek()
        next_b = None if b in stopped else chains[b].peek()
        # The first chain (in station order) whose next envelope saw only what is in goes first;
        # if neither may, the first that has any goes in anyway and the gate says what is wrong.
        if next_a is not None and next_a.seen <= pos[b]:
            fp, nxt = a, next_a
        elif next_b is not None and next_b.seen <= pos[a]:
            fp, nxt = b, next_b
        elif next_a is not None or next_b is not None:
            fp, nxt = (a, next_a) if next_a is not None else (b, next_b)  # type: ignore[assignment]
            if gate.other(fp) in stopped:
                stopped.add(fp)
                continue
        else:
            break
        expect = pos[fp] + 1
        problem = _accept_row(gate, fp, nxt, expect)
        if problem is not None:
            report.problems.append(Problem(f"{_name(data, fp)} chain, entry {expect}", problem))
            stopped.add(fp)
            continue
        chains[fp].pop()
        replay.add(fp, nxt.id, nxt.leaf)
        pos[fp] = expect
    report.chain_sizes[a], report.chain_sizes[b] = pos[a], pos[b]


def _accept_row(gate: TrustedLine, fp: str, row: _Next, expect: int) -> str | None:
    """One stored row through the gate; a problem in words, or None. Index columns that disagree
    with the signed bytes are storage damage, told apart from what the gate refuses."""
    try:
        # raw is None only for an envelope a worker opened, which the gate then does not read
        env = gate.accept_envelope(row.raw or b"", sender=fp, redacted_ok=True, verified=row.opened)
    except SeqOrderError as exc:
        try:
            header_bytes = row.opened.header_bytes if row.opened is not None else split(row.raw or b"").header_bytes
            signed_seq = canonical.decode_object(header_bytes, "envelope header")["seq"]
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


def _verify_equivocations(data: LineSource, gate: TrustedLine, report: LineReport) -> None:
    for sender, seq, a, b in data.equivocations:
        at = f"{_name(data, sender)}, seq {seq}"
        try:
            ea, eb = gate.check_equivocation(a, b)
        except RevokedEvidenceError:
            continue  # flagged by the gate with the revoked key's other work (report.flagged_statements)
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


def _verify_receipts(data: LineSource, gate: TrustedLine, report: LineReport) -> None:
    """Every receipt through the gate. One that contradicts the chain is evidence and is reported
    as such; one for a chain that already failed earlier is not counted (reported there)."""
    for i, signed in enumerate(data.iter_receipts(), start=1):
        at = f"line {data.line[:8]}, receipt {i}"
        try:
            gate.accept_receipt(signed)
        except (ReceiptBeyondChainError, ReceiptMismatchError) as exc:
            peek = Receipt.peek(signed)
            if peek.seq <= data.held(peek.of) and report.chain_sizes.get(peek.of, 0) < peek.seq:
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


def _verify_checkpoints(data: LineSource, gate: TrustedLine, report: LineReport) -> None:
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
