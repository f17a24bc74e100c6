"""Signed certificate payloads for the QR code: CBOR claims in a COSE_Sign1 (Ed25519), zlib, Base45, `HC1:`.

The transport is the EU Digital COVID Certificate's (HC1), so the QR text can be checked
offline with nothing but a public key:

    "HC1:" + Base45( zlib( COSE_Sign1 ) )
    COSE_Sign1 = tag 18 [ protected: bstr {1 (alg): -8 (EdDSA), 4 (kid): 8 bytes},
                          unprotected: {} , payload: bstr CWT claims, signature: 64 bytes ]
    CWT claims = {1 (iss): issuer, 6 (iat): seconds, [4 (exp): seconds],
                  -260 (hcert): {1: {"ver": 1, "nam", "dob", "dn", "mp", "dt", "ci"}}}

The kid is the first 8 bytes of SHA-256 over the raw 32-byte public key, so keys rotate by
adding the new public key to the verifiers' list before signing with the new private key.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
import zlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import date, datetime, timezone

import base45
import cbor2
from cryptography.exceptions import InvalidSignature as _CryptoInvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

PREFIX = "HC1:"
ISSUER = "Asisten Sertifikat Vaksin (demo)"
FORMAT_VERSION = 1

COSE_SIGN1_TAG = 18
HEADER_ALG, HEADER_KID = 1, 4
ALG_EDDSA = -8
CLAIM_ISS, CLAIM_EXP, CLAIM_IAT, CLAIM_HCERT = 1, 4, 6, -260
KID_LENGTH = 8

# A QR code holds at most 4,296 alphanumeric characters; anything longer is not ours, and the
# limits keep a hostile input (a zlib bomb, deep CBOR) cheap to refuse.
MAX_TEXT_LENGTH = 4296
MAX_DECOMPRESSED = 16 * 1024
ZLIB_LEVEL = 9


# --- errors: each says, in Indonesian, why a payload is refused -------------------------------


class VerificationError(Exception):
    """The payload is not a genuine certificate; `reason` is one line for the person checking."""

    reason = "Kode QR tidak sah."

    def __init__(self, detail: str | None = None):
        self.detail = detail
        super().__init__(f"{self.reason} ({detail})" if detail else self.reason)


class InvalidFormat(VerificationError):
    """Not a certificate payload at all, or damaged: wrong alphabet, cut short, bad structure."""

    reason = "Bukan kode QR sertifikat yang utuh: isinya rusak, terpotong, atau bukan kode sertifikat."


class UnsupportedFormat(VerificationError):
    """A payload of another kind or version than this verifier knows."""

    reason = "Format kode QR tidak didukung."


class UnknownKey(VerificationError):
    """Signed with a key (kid) that is not among the trusted public keys."""

    reason = "Ditandatangani dengan kunci yang tidak dikenal: sertifikat ini bukan terbitan kami."


class InvalidSignature(VerificationError):
    """The signature does not match the content: altered, or signed by someone else."""

    reason = "Tanda tangan tidak cocok: isi kode QR telah diubah atau dipalsukan."


class Expired(VerificationError):
    """The payload carries an expiry time that has passed."""

    reason = "Sertifikat sudah kedaluwarsa."


class KeyFormatError(ValueError):
    """A key from the environment cannot be read (the message never contains the key)."""


# --- keys -------------------------------------------------------------------------------------


def key_id(public_key: Ed25519PublicKey) -> bytes:
    return hashlib.sha256(public_bytes(public_key)).digest()[:KID_LENGTH]


def public_bytes(public_key: Ed25519PublicKey) -> bytes:
    return public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def private_bytes(private_key: Ed25519PrivateKey) -> bytes:
    return private_key.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw,
                                     serialization.NoEncryption())


def encode_key(raw: bytes) -> str:
    """The form keys take in the environment: standard base64 of the raw 32 bytes."""
    return base64.b64encode(raw).decode()


def _raw32(text: str, name: str) -> bytes:
    try:
        raw = base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError):
        try:  # the URL-safe alphabet is a common slip when keys are copied around
            raw = base64.urlsafe_b64decode(text.strip())
        except (binascii.Error, ValueError):
            raise KeyFormatError(f"{name}: not base64 and not PEM") from None
    if len(raw) != 32:
        raise KeyFormatError(f"{name}: an Ed25519 key is 32 bytes, this one is {len(raw)}")
    return raw


def private_key_from_text(text: str, name: str = "CERTIFICATE_SIGNING_KEY") -> Ed25519PrivateKey:
    """A private key as base64 of its raw 32 bytes, or as an unencrypted PKCS#8 PEM."""
    text = text.strip()
    if text.startswith("-----BEGIN"):
        try:
            key = serialization.load_pem_private_key(text.encode(), password=None)
        except (ValueError, TypeError):
            raise KeyFormatError(f"{name}: a PEM that is not an unencrypted private key") from None
        if not isinstance(key, Ed25519PrivateKey):
            raise KeyFormatError(f"{name}: the PEM holds a {type(key).__name__}, not an Ed25519 key")
        return key
    return Ed25519PrivateKey.from_private_bytes(_raw32(text, name))


_PEM_PUBLIC = re.compile(r"-----BEGIN PUBLIC KEY-----.*?-----END PUBLIC KEY-----", re.DOTALL)


def public_keys_from_text(text: str, name: str = "CERTIFICATE_PUBLIC_KEYS") -> list[Ed25519PublicKey]:
    """Public keys separated by commas or white space, each base64 of 32 bytes or a PEM block."""
    keys: list[Ed25519PublicKey] = []
    for block in _PEM_PUBLIC.findall(text):
        try:
            key = serialization.load_pem_public_key(block.encode())
        except ValueError:
            raise KeyFormatError(f"{name}: a PEM block that is not a public key") from None
        if not isinstance(key, Ed25519PublicKey):
            raise KeyFormatError(f"{name}: a PEM block holds a {type(key).__name__}, not an Ed25519 key")
        keys.append(key)
    for item in re.split(r"[\s,]+", _PEM_PUBLIC.sub(" ", text)):
        if item:
            keys.append(Ed25519PublicKey.from_public_bytes(_raw32(item, name)))
    if not keys:
        raise KeyFormatError(f"{name}: no key in it")
    return keys


# --- claims -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Claims:
    full_name: str
    birth_date: date
    dose: int
    vaccine: str
    vaccinated_on: date
    certificate_number: str
    issued_at: datetime
    issuer: str = ISSUER
    expires_at: datetime | None = None


def _seconds(moment: datetime) -> int:
    if moment.tzinfo is None:
        raise ValueError("issued_at and expires_at must carry a time zone")
    return int(moment.timestamp())


def _claims_map(claims: Claims) -> dict:
    cwt = {
        CLAIM_ISS: claims.issuer,
        CLAIM_IAT: _seconds(claims.issued_at),
        CLAIM_HCERT: {1: {
            "ver": FORMAT_VERSION,
            "nam": claims.full_name,
            "dob": claims.birth_date.isoformat(),
            "dn": int(claims.dose),
            "mp": claims.vaccine,
            "dt": claims.vaccinated_on.isoformat(),
            "ci": claims.certificate_number,
        }},
    }
    if claims.expires_at is not None:
        cwt[CLAIM_EXP] = _seconds(claims.expires_at)
    return cwt


def _sig_structure(protected: bytes, payload: bytes) -> bytes:
    return cbor2.dumps(["Signature1", protected, b"", payload])


def _encode(cose: bytes) -> str:
    return PREFIX + base45.b45encode(zlib.compress(cose, ZLIB_LEVEL)).decode("ascii")


def sign(claims: Claims, private_key: Ed25519PrivateKey, *, kid: bytes | None = None) -> str:
    """The QR text for these claims. Deterministic: Ed25519 and zlib give the same text for the
    same claims and key, so a cached PDF stays right. `kid` is only for tests that forge one."""
    kid = key_id(private_key.public_key()) if kid is None else kid
    protected = cbor2.dumps({HEADER_ALG: ALG_EDDSA, HEADER_KID: kid})
    payload = cbor2.dumps(_claims_map(claims))
    signature = private_key.sign(_sig_structure(protected, payload))
    return _encode(cbor2.dumps(cbor2.CBORTag(COSE_SIGN1_TAG, [protected, {}, payload, signature])))


# --- verification -----------------------------------------------------------------------------


def _loads(data: bytes, what: str):
    try:
        return cbor2.loads(data, max_depth=8, allow_indefinite=False, allow_duplicate_keys=False)
    except (cbor2.CBORError, ValueError, TypeError, OverflowError, RecursionError):
        raise InvalidFormat(f"{what}: bukan CBOR yang sah") from None


def _decompress(data: bytes) -> bytes:
    inflater = zlib.decompressobj()
    try:
        out = inflater.decompress(data, MAX_DECOMPRESSED)
    except zlib.error:
        raise InvalidFormat("data zlib rusak") from None
    if inflater.unconsumed_tail:
        raise InvalidFormat("data zlib terlalu besar")
    if not inflater.eof or inflater.unused_data:
        raise InvalidFormat("data zlib terpotong atau diikuti data lain")
    return out


def _date(value, what: str) -> date:
    if not isinstance(value, str):
        raise InvalidFormat(f"{what}: bukan tanggal")
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise InvalidFormat(f"{what}: bukan tanggal") from None


def _claims_from(cwt, now: datetime) -> Claims:
    if not isinstance(cwt, Mapping):
        raise InvalidFormat("klaim: bukan map CBOR")
    hcert = cwt.get(CLAIM_HCERT)
    cert = hcert.get(1) if isinstance(hcert, Mapping) else None
    if not isinstance(cert, Mapping):
        raise InvalidFormat("klaim: tanpa data sertifikat")
    if cert.get("ver") != FORMAT_VERSION:
        raise UnsupportedFormat(f"versi {cert.get('ver')!r}, yang didukung {FORMAT_VERSION}")
    iss, iat, exp = cwt.get(CLAIM_ISS), cwt.get(CLAIM_IAT), cwt.get(CLAIM_EXP)
    text = {k: cert.get(k) for k in ("nam", "mp", "ci")}
    if not (isinstance(iss, str) and all(isinstance(v, str) and v for v in text.values())
            and type(iat) is int and (exp is None or type(exp) is int)
            and type(cert.get("dn")) is int and cert["dn"] >= 1):
        raise InvalidFormat("klaim: ada kolom yang hilang atau jenisnya salah")
    expires_at = datetime.fromtimestamp(exp, timezone.utc) if exp is not None else None
    if expires_at is not None and now >= expires_at:
        raise Expired(f"sejak {expires_at:%Y-%m-%d}")
    return Claims(full_name=text["nam"], birth_date=_date(cert.get("dob"), "dob"), dose=cert["dn"],
                  vaccine=text["mp"], vaccinated_on=_date(cert.get("dt"), "dt"),
                  certificate_number=text["ci"], issued_at=datetime.fromtimestamp(iat, timezone.utc),
                  issuer=iss, expires_at=expires_at)


def verify(text: str, public_keys: Iterable[Ed25519PublicKey], *, now: datetime | None = None) -> Claims:
    """The claims of a genuine payload; raises a VerificationError subclass saying why not.

    Only the exact text that `sign` produces is accepted: after the signature checks, the
    payload is encoded again and must come out identical. zlib ignores some bits (the padding
    of the last byte) and CBOR has longer spellings of the same value, so without this an altered
    character could still verify; with it, every altered character is refused.
    """
    now = now or datetime.now(timezone.utc)
    if not isinstance(text, str):
        raise InvalidFormat("bukan teks")
    text = text.strip()  # pasted text often brings a newline or spaces at the ends
    if not text:
        raise InvalidFormat("kosong")
    if len(text) > MAX_TEXT_LENGTH:
        raise InvalidFormat("lebih panjang dari kode QR mana pun")
    if not text.startswith(PREFIX):
        if re.match(r"^[A-Z]{2}\d+:", text) or text.startswith("SERTIFIKAT-VAKSIN-COVID19:"):
            raise UnsupportedFormat(f"awalan {text.split(':', 1)[0]}, yang didukung HC1")
        raise InvalidFormat("tidak diawali HC1:")
    try:
        compressed = base45.b45decode(text[len(PREFIX):])
    except (ValueError, TypeError):
        raise InvalidFormat("bukan Base45") from None
    cose_bytes = _decompress(compressed)
    cose = _loads(cose_bytes, "COSE")
    if not (isinstance(cose, cbor2.CBORTag) and cose.tag == COSE_SIGN1_TAG):
        raise UnsupportedFormat("bukan pesan COSE_Sign1")
    parts = cose.value
    # cbor2 gives a tag's array as a tuple and a map inside it as a frozendict.
    if not (isinstance(parts, (list, tuple)) and len(parts) == 4 and isinstance(parts[0], bytes)
            and isinstance(parts[1], Mapping) and isinstance(parts[2], bytes) and isinstance(parts[3], bytes)):
        raise InvalidFormat("struktur COSE_Sign1 salah")
    protected_bytes, unprotected, payload, signature = parts
    if unprotected:
        # Nothing in it would be covered by the signature: we never put anything there.
        raise InvalidFormat("header COSE tanpa tanda tangan tidak kosong")
    protected = _loads(protected_bytes, "header COSE")
    if not isinstance(protected, Mapping):
        raise InvalidFormat("header COSE: bukan map")
    if protected.get(HEADER_ALG) != ALG_EDDSA:
        raise UnsupportedFormat(f"algoritme {protected.get(HEADER_ALG)!r}, yang didukung EdDSA (-8)")
    kid = protected.get(HEADER_KID)
    if not isinstance(kid, bytes) or not kid:
        raise InvalidFormat("header COSE tanpa kid")
    trusted = {key_id(key): key for key in public_keys}
    key = trusted.get(kid)
    if key is None:
        raise UnknownKey(f"kid {kid.hex()}")
    try:
        key.verify(signature, _sig_structure(protected_bytes, payload))
    except _CryptoInvalidSignature:
        raise InvalidSignature() from None
    if _encode(cbor2.dumps(cose)) != text:
        raise InvalidFormat("tidak dalam bentuk aslinya")
    return _claims_from(_loads(payload, "klaim"), now)
