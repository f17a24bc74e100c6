"""The vaccination certificate as a one-page PDF (fpdf2) with a QR code (segno).

The QR code carries a signed payload (backend/signing.py) that anyone can verify offline.
Built PDFs are cached by (certificate id, person version): a change of name bumps the
version, so a corrected certificate is never served from the cache; the signature is
deterministic (Ed25519), so a cached PDF holds exactly the QR a rebuild would draw.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from datetime import date, timedelta, timezone

import segno
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from fpdf import FPDF
from fpdf.enums import RenderStyle

from .identifiers import mask_nik
from .signing import Claims, sign

MONTHS = ["Januari", "Februari", "Maret", "April", "Mei", "Juni", "Juli", "Agustus",
          "September", "Oktober", "November", "Desember"]
DOSE_LABELS = {1: "Dosis 1", 2: "Dosis 2", 3: "Booster (Dosis 3)"}
WIB = timezone(timedelta(hours=7), "WIB")
QR_ERROR = "q"
# One fixed mask pattern instead of segno scoring all eight to pick the best: the payload is
# compressed and signed, so it has none of the regular runs masks exist to break up, and the
# scoring was 20 of the 38 ms a certificate took to build. zbarimg read 1,299 of 1,300 PDFs with
# mask 0 and 1,129 of 1,130 with the best mask (rendered at 200 dpi, random keys and holders).
QR_MASK = 0
# Each row of the QR reaches this far (mm) into the next, so no seam shows between rows either.
QR_ROW_OVERLAP = 0.04


def tanggal(day: date) -> str:
    """A date as Indonesians write it: 5 Juli 2021."""
    return f"{day.day} {MONTHS[day.month - 1]} {day.year}"


def claims_of(data: dict) -> Claims:
    """What the QR code vouches for. No NIK, not even masked: the name and birth date identify
    the holder against an ID card, and the QR text is readable by anyone who scans it."""
    return Claims(full_name=data["full_name"], birth_date=data["birth_date"], dose=data["dose"],
                  vaccine=data["vaccine"], vaccinated_on=data["vaccinated_on"],
                  certificate_number=data["certificate_number"],
                  # The certificate's own issue time, not now: the same data signs to the same text.
                  issued_at=data["issued_at"])


def qr_payload(data: dict, signing_key: Ed25519PrivateKey) -> str:
    """The text in the certificate's QR code: the signed HC1 payload."""
    return sign(claims_of(data), signing_key)


def holder_rows(claims: Claims) -> list[tuple[str, str]]:
    """A verified payload as the verifier shows it (tools/verify_certificate.py, /verifikasi)."""
    return [
        ("Nama", claims.full_name),
        ("Tanggal lahir", tanggal(claims.birth_date)),
        ("Dosis", DOSE_LABELS.get(claims.dose, f"Dosis {claims.dose}")),
        ("Vaksin", claims.vaccine),
        ("Tanggal vaksinasi", tanggal(claims.vaccinated_on)),
        ("Nomor sertifikat", claims.certificate_number),
        ("Penerbit", claims.issuer),
        ("Diterbitkan", tanggal(claims.issued_at.astimezone(WIB).date())),
    ] + ([("Berlaku sampai", tanggal(claims.expires_at.astimezone(WIB).date()))] if claims.expires_at else [])


def _default_signing_key() -> Ed25519PrivateKey:
    from .settings import get_settings  # late: only callers that pass no key need the settings

    return get_settings().certificate_signing_key


def _dark_runs(row: list[bool]) -> list[tuple[int, int]]:
    """[start, end) of each run of dark modules. One rectangle per run, not per module: renderers
    antialias the edges of adjacent rectangles into faint seams that scanners stumble on."""
    runs, start = [], None
    for c, dark in enumerate(row + [False]):
        if dark and start is None:
            start = c
        elif not dark and start is not None:
            runs.append((start, c))
            start = None
    return runs


def build_pdf(data: dict, signing_key: Ed25519PrivateKey | None = None) -> bytes:
    """data: full_name, nik, birth_date, dose, vaccine, vaccinated_on, facility, certificate_number,
    issued_at. signing_key: the settings' CERTIFICATE_SIGNING_KEY when not given."""
    pdf = FPDF(format="A5", orientation="landscape")
    pdf.set_creator("Asisten Sertifikat Vaksin")
    pdf.set_title(f"Sertifikat Vaksinasi COVID-19 {data['certificate_number']}")
    pdf.set_auto_page_break(False)
    pdf.add_page()
    pdf.set_fill_color(0, 122, 94)
    pdf.rect(0, 0, pdf.w, 22, style="F")
    pdf.set_text_color(255, 255, 255)
    pdf.set_font("Helvetica", "B", 16)
    pdf.set_xy(10, 5)
    pdf.cell(0, 8, "SERTIFIKAT VAKSINASI COVID-19")
    pdf.set_font("Helvetica", "", 9)
    pdf.set_xy(10, 13)
    pdf.cell(0, 5, "Asisten Sertifikat Vaksin - data demonstrasi, bukan dokumen resmi")

    pdf.set_text_color(0, 0, 0)
    rows = [
        ("Nama", data["full_name"]),
        ("NIK", mask_nik(data["nik"])),
        ("Tanggal lahir", tanggal(data["birth_date"])),
        ("Dosis", DOSE_LABELS.get(data["dose"], f"Dosis {data['dose']}")),
        ("Vaksin", data["vaccine"]),
        ("Tanggal vaksinasi", tanggal(data["vaccinated_on"])),
        ("Fasilitas kesehatan", data["facility"]),
        ("Nomor sertifikat", data["certificate_number"]),
    ]
    y = 30
    for label, value in rows:
        pdf.set_xy(10, y)
        pdf.set_font("Helvetica", "", 10)
        pdf.cell(42, 7, label)
        pdf.set_font("Helvetica", "B", 11)
        pdf.cell(100, 7, str(value))
        y += 9

    # Drawing the QR modules as rectangles keeps the PDF small and needs no image codec.
    # Error level Q, as the EU certificates use: a signed demo payload (~380 characters, all in
    # the QR alphanumeric set) is version 14 or 15, 77-81 modules with the border, so about
    # 0.63 mm a module at 50 mm. A decoder reads them (tests/test_signing.py; QR_MASK above).
    qr = segno.make_qr(qr_payload(data, signing_key or _default_signing_key()), error=QR_ERROR, mask=QR_MASK)
    size = 50.0
    matrix = [list(row) for row in qr.matrix_iter(border=2)]
    module = size / len(matrix)
    x0, y0 = pdf.w - size - 10, 32
    pdf.set_fill_color(0, 0, 0)
    for r, row in enumerate(matrix):
        for start, end in _dark_runs(row):
            pdf.rect(x0 + start * module, y0 + r * module, (end - start) * module, module + QR_ROW_OVERLAP,
                     style=RenderStyle.F)  # the member, not "F": fpdf2 parses a string per call
    pdf.set_font("Helvetica", "", 7)
    pdf.set_xy(x0, y0 + size + 1)
    pdf.cell(size, 4, data["certificate_number"], align="C")
    return bytes(pdf.output())


class CertificateCache:
    """A small LRU of built PDFs, per process; any replica can rebuild a missing one."""

    def __init__(self, max_items: int = 256, signing_key: Ed25519PrivateKey | None = None):
        self._signing_key = signing_key
        self._items: OrderedDict[tuple, bytes] = OrderedDict()
        self._max = max_items
        self._lock = threading.Lock()

    def get_pdf(self, data: dict) -> bytes:
        key = (data["certificate_id"], data["version"])
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                return self._items[key]
        pdf = build_pdf(data, self._signing_key)
        with self._lock:
            self._items[key] = pdf
            while len(self._items) > self._max:
                self._items.popitem(last=False)
        return pdf
