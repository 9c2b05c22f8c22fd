"""One exception hierarchy for redline.

Every message is written for the person who has to act on it: a duty officer at 3 a.m. or the
engineer running the station. Errors are split by who is at fault (python-tuf / h11 style):

- ``LocalProtocolError``: we (or our operator) asked for something the protocol forbids.
- ``RemoteProtocolError``: the peer sent something the protocol forbids.
- ``VerificationError``: bytes failed a cryptographic or structural check; one subclass per reason.
- ``StorageError``: the ledger could not do what was asked; nothing was half-written.
"""

from __future__ import annotations


class RedlineError(Exception):
    """Root of every error redline raises on purpose."""


class ConfigError(RedlineError):
    """The station directory or its configuration is missing or wrong."""


class LocalProtocolError(RedlineError):
    """We asked for something the protocol forbids (our bug or our operator's request)."""


class NoPathError(LocalProtocolError):
    """Voice audio for a live call while no path of the line is up: not sent, hashed or recorded."""


class RemoteProtocolError(RedlineError):
    """The peer sent something the protocol forbids."""


class VerificationError(RedlineError):
    """Bytes failed a check; nothing built from them was trusted or stored."""


class EncodingError(VerificationError):
    """Bytes are not the canonical encoding (RFC 8785 JSON, our subset) or are malformed."""


class SchemaError(VerificationError):
    """A decoded object lacks a field, has a wrong type, or a value out of range."""


class SignatureError(VerificationError):
    """An Ed25519 signature does not verify under the key it names."""


class UnknownKeyError(VerificationError):
    """A key id is not one we were given from outside (pinned at pairing or on the command line)."""


# -- the rules of the trust gate (gate.py): one class per rule broken ---------------------------------


class CertificateError(VerificationError):
    """A key certificate is not signed by the station's pinned root, or a root is not the one pinned."""


class KeyWindowError(VerificationError):
    """An envelope is signed by a certified key outside that key's window in seq terms (a key a KEY
    envelope retired, or one whose KEY envelope has not opened it yet), or a KEY envelope does not
    name a new signing key its station's pinned root certified."""


class RootRotationError(VerificationError):
    """A ROOT or ROOT_CONFIRM envelope is not as section 5.9 says: a rotation not signed by both the
    root in force and the new root, not the next version, one while another awaits confirmation, or
    a confirmation of a ROOT the peer does not hold pending."""


class RevocationError(VerificationError):
    """A REVOKE envelope is not as section 5.9 says: its revocation is not signed by the station's
    pinned root, names a key that never signed the chain or one already revoked, or its checkpoint
    is not one both stations co-signed over the chain held."""


class WrongLineError(VerificationError):
    """An envelope or statement names another line (replayed from elsewhere)."""


class WrongSenderError(VerificationError):
    """Signed by a station that is not this line's, or not the one expected here."""


class RedactedBodyError(VerificationError):
    """An envelope arrived without its body where only a full envelope is acceptable (the wire)."""


class SeqOrderError(VerificationError):
    """An envelope's seq is not the next of its chain (a gap, a repeat, a renumbering)."""


class PrevLinkError(VerificationError):
    """An envelope does not name the previous envelope of its chain as ``prev``."""


class SeenBackwardsError(VerificationError):
    """An envelope's ``seen`` goes back from what its chain's previous envelope had seen."""


class SeenBeyondError(VerificationError):
    """An envelope claims to have seen an envelope of the other chain that is not held."""


class SeenIdError(VerificationError):
    """An envelope's ``seen`` names the other chain's seq with an id that is not the one held."""


class SelfReceiptError(VerificationError):
    """A station receipted its own chain: worth nothing."""


class ReceiptBeyondChainError(VerificationError):
    """A receipt for a seq the receipted chain does not hold."""


class ReceiptMismatchError(VerificationError):
    """A receipt names a different envelope at a seq from the one the chain holds: evidence."""


class NotEquivocationError(VerificationError):
    """Offered as equivocation evidence, but not two envelopes of one station at one seq of this line."""


class RevokedEvidenceError(NotEquivocationError):
    """Two envelopes of one station at one seq, but at a seq its root revoked (signed by a revoked
    key after the checkpoint its REVOKE names): evidence of the stolen key, not of the station."""


class MerkleError(VerificationError):
    """A Merkle tree head or proof does not match the leaves it claims."""


class EquivocationError(VerificationError):
    """Two different validly signed envelopes claim the same (line, sender, seq)."""

    def __init__(self, message: str, *, seq: int, first_id: str, second_id: str) -> None:
        super().__init__(message)
        self.seq = seq
        self.first_id = first_id
        self.second_id = second_id


class CheckpointError(VerificationError):
    """A checkpoint is not signed by both stations or does not match the chains held."""


class CheckpointNumberError(CheckpointError):
    """Checkpoint n is not the next: they run 1, 2, 3 …"""


class CheckpointChainError(CheckpointError):
    """A checkpoint's ``prev`` is not the digest of the checkpoint before it."""


class CheckpointCoverageError(CheckpointError):
    """A checkpoint covers more of a chain than is held."""


class SplitViewError(CheckpointError):
    """A checkpoint's tree head does not match the chain held: two histories were signed."""


class CheckpointShrinkError(CheckpointError):
    """A checkpoint covers less of a chain than an earlier checkpoint did."""


class CosignError(CheckpointError):
    """The countersignature is missing, by the proposer itself, or not over this checkpoint."""


class PairingError(RedlineError):
    """A pairing token or safety code is malformed, expired, reused, foreign or wrong."""


class StorageError(RedlineError):
    """The ledger refused or failed an operation; the store is unchanged."""


class FencedError(StorageError):
    """This process is deposed: the store's lease has a newer term than the one it holds (another
    process of the station took over). The write was refused inside its own transaction, so
    nothing of it is stored and nothing of it may be sent; the process must step down."""


class WrongStoreError(StorageError):
    """The store was made for another station (its ``meta.station`` is not this folder's root
    fingerprint): refused before anything is written (``ledger.rows.check_station``)."""


class NotFoundError(RedlineError):
    """Asked for something this station does not hold (a line, an envelope, an outbox entry)."""


class LineNotFoundError(NotFoundError):
    """No line matches the id, id prefix or peer name given (or more than one does)."""


class OutOfOrderError(RedlineError):
    """The ledger was asked to store an envelope that is not the next of its chain: a bug above it
    (the gate accepts only the next one), refused before anything was written."""


class SchemaVersionError(StorageError):
    """The store's layout is not this redline's: written by a newer one (``newer``), or older and
    opened read-only, where it cannot be brought up to date. Either way it was not touched."""

    def __init__(self, message: str, *, newer: bool = True) -> None:
        super().__init__(message)
        self.newer = newer


class LimitError(RedlineError):
    """An input is over a documented limit (message size, queue length, disk use)."""


class ControlError(RedlineError):
    """The local control socket failed: no station runs, or the connection broke before an answer."""


class StationBusyError(RedlineError):
    """Another process holds the station's folder: it serves the station, or changes it while stopped."""


class StationNotRunningError(ControlError):
    """No station answers on the control socket: nothing was sent to it."""


class ControlRefusedError(ControlError):
    """The running station answered the request with a refusal (its reason is the message)."""


class ReceiptTimeoutError(RedlineError):
    """Our envelope is durable here, but the peer has not receipted it in the time asked for."""


class TransportError(RedlineError):
    """A path could not be opened, or broke."""


class ConnectionClosedError(TransportError):
    """The connection is closed: by the peer, by the network, or by us."""


class BundleError(VerificationError):
    """A bundle or checkpoint file cannot be made or read, or a verifier's input is unusable."""


class RecordingError(VerificationError):
    """A call recording (recording.py) is not a whole, sealed redline Ogg Opus recording."""


class RecordingMismatchError(VerificationError):
    """A call recording's packets do not hash to the digest its station signed in CALL_AUDIO (or it
    is of another call, sender or direction than the bundle says)."""


class NoticeError(SchemaError):
    """A notice is malformed or impossible; it was not filed, sent or put on the board."""


class NoticeBoardError(RedlineError):
    """The board cannot do what was asked (unknown or duplicate ref, wrong filer); it is unchanged."""


class IdempotencyConflictError(LocalProtocolError):
    """An idempotency key already stands for another message; the new one was not accepted."""


class RoleError(VerificationError):
    """A person signed something their role does not allow (an auditor's ACK); it counts nowhere."""
