"""The vaccination certificate as a one-page PDF (fpdf2) with a QR code (segno).

Built PDFs are cached by (certificate id, person version): a change of name bumps the
version, so a corrected certificate is never served from the cache.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from datetime import date

import segno
from fpdf import FPDF

from .identifiers import mask_nik

MONTHS = ["Januari", "Februari", "Maret", "April", "Mei", "Juni", "Juli", "Agustus",
          "September", "Oktober", "November", "Desember"]
DOSE_LABELS = {1: "Dosis 1", 2: "Dosis 2", 3: "Booster (Dosis 3)"}


def tanggal(day: date) -> str:
    """A date as Indonesians write it: 5 Juli 2021."""
    return f"{day.day} {MONTHS[day.month - 1]} {day.year}"


def qr_payload(data: dict) -> str:
    # Plain reference for now; a signed payload anyone can verify offline is a later step.
    return f"SERTIFIKAT-VAKSIN-COVID19:{data['certificate_number']}"


def build_pdf(data: dict) -> bytes:
    """data: full_name, nik, birth_date, dose, vaccine, vaccinated_on, facility, certificate_number."""
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
    qr = segno.make(qr_payload(data), error="m")
    size = 50.0
    matrix = list(qr.matrix_iter(border=2))
    module = size / len(matrix)
    x0, y0 = pdf.w - size - 10, 32
    pdf.set_fill_color(0, 0, 0)
    for r, row in enumerate(matrix):
        for c, dark in enumerate(row):
            if dark:
                pdf.rect(x0 + c * module, y0 + r * module, module, module, style="F")
    pdf.set_font("Helvetica", "", 7)
    pdf.set_xy(x0, y0 + size + 1)
    pdf.cell(size, 4, data["certificate_number"], align="C")
    return bytes(pdf.output())


class CertificateCache:
    """A small LRU of built PDFs, per process; any replica can rebuild a missing one."""

    def __init__(self, max_items: int = 256):
        self._items: OrderedDict[tuple, bytes] = OrderedDict()
        self._max = max_items
        self._lock = threading.Lock()

    def get_pdf(self, data: dict) -> bytes:
        key = (data["certificate_id"], data["version"])
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                return self._items[key]
        pdf = build_pdf(data)
        with self._lock:
            self._items[key] = pdf
            while len(self._items) > self._max:
                self._items.popitem(last=False)
        return pdf
