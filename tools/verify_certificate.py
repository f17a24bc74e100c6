"""Checks a certificate's QR text with the public keys only: `make verify-certificate QR='HC1:...'`.

Prints the holder's data and exits 0 when the payload is genuine; prints one line saying why
and exits 1 when it is not (altered, another key, unknown format, garbage); exits 2 when it
cannot check at all (no payload given, public keys missing or unreadable). The keys are
CERTIFICATE_PUBLIC_KEYS, or on a development machine the development signing key's public key.
"""

from __future__ import annotations

import argparse
import sys

from backend.certificates import holder_rows
from backend.settings import verification_keys
from backend.signing import VerificationError, verify

GENUINE, REJECTED, CANNOT_CHECK = 0, 1, 2


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="make verify-certificate",
        description="Memeriksa kode QR sertifikat vaksin (teks HC1:...) dengan kunci publik.")
    parser.add_argument("payload", nargs="?", default=None,
                        help="teks kode QR; '-' atau kosong: dibaca dari masukan standar")
    args = parser.parse_args(argv)
    payload = args.payload
    if payload in (None, "-") and not sys.stdin.isatty():
        payload = sys.stdin.read()
    if not payload or not payload.strip():
        print("Tidak ada kode QR untuk diperiksa: make verify-certificate QR='HC1:...'", file=sys.stderr)
        return CANNOT_CHECK
    try:
        keys = verification_keys()
    except ValueError as exc:
        print(f"Kunci publik tidak dapat dibaca: {exc}", file=sys.stderr)
        return CANNOT_CHECK
    try:
        claims = verify(payload, keys)
    except VerificationError as exc:
        print(f"DITOLAK: {exc}", file=sys.stderr)
        return REJECTED
    print("ASLI: tanda tangan sah, data pemegang sertifikat:")
    rows = holder_rows(claims)
    width = max(len(label) for label, _ in rows)
    for label, value in rows:
        print(f"  {label:<{width}} : {value}")
    return GENUINE


if __name__ == "__main__":
    sys.exit(main())
