"""Text shown to staff and written to logs: citizens' control characters cannot act on an
officer's terminal (`make tickets`, the logs), and the log masking finds phone numbers and NIKs
however people write them."""

from __future__ import annotations

import logging
import os
import re
import subprocess
import sys
import unicodedata

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from backend.logmask import MaskingFilter, mask_text
from backend.officer_desk import channel_gate
from backend.staff_text import for_staff
from backend.tickets import Tickets

from conftest import ROOT

# --- 4. control characters in what officers read -------------------------------------------

# What a hostile citizen may type, each with the escape an officer must see instead.
HOSTILE = {
    "\x1b[2J\x1b[H": "\\x1b[2J\\x1b[H",                               # clear the screen, cursor home
    "\x1b[1A\x1b[2K": "\\x1b[1A\\x1b[2K",                              # up one line, erase it
    "\x1b]52;c;ZWNobyBoYWNrZWQ=\x07": "\\x1b]52;c;ZWNobyBoYWNrZWQ=\\x07",  # OSC 52: write the clipboard
    "\x1b]8;;https://evil.example/\x1b\\klik\x1b]8;;\x1b\\":
        "\\x1b]8;;https://evil.example/\\x1b\\klik\\x1b]8;;\\x1b\\",     # OSC 8: a hidden link
    "\u202etxt.exe": "\\u202etxt.exe",                                  # right-to-left override
    "\x9b2J": "\\x9b2J",                                                # C1 CSI
    "a\u200db\u200bc\ufeff": "a\\u200db\\u200bc\\ufeff",                # zero-width joiner, space, BOM
    "nul\x00": "nul\\x00",
    "salah\x08\x08\x08\x08\x08benar": "salah\\x08\\x08\\x08\\x08\\x08benar",
    "petugas: OK\rwarga": "petugas: OK\\rwarga",                        # overwrite the line
    "\U000e0041": "\\U000e0041",                                        # a tag character
}
UNSAFE_CATEGORIES = {"Cc", "Cf", "Cs", "Zl", "Zp"}


def unsafe_characters(text: str, allowed: str = "\n") -> list[str]:
    return [c for c in text if unicodedata.category(c) in UNSAFE_CATEGORIES and c not in allowed]


def run_tickets(database_url: str, tmp_path, *args: str) -> str:
    """The officers' real command, as `make tickets` runs it, against the test database."""
    env = {**os.environ, "DATABASE_URL": database_url, "VAR_DIR": str(tmp_path), "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-m", "tools.tickets", *args], cwd=ROOT, env=env,
                          capture_output=True, timeout=120)
    assert done.returncode == 0, done.stderr.decode(errors="replace")
    return done.stdout.decode("utf-8")


def login(backend, outbox, conversation: str, phone: str) -> None:
    backend.otp.request(conversation, phone)
    assert backend.otp.verify(conversation, outbox.last_code(phone)).status == "ok"


def test_officer_cli_shows_citizen_control_characters_as_escapes(backend, outbox, clock, database_url, tmp_path):
    hostile = " ".join(HOSTILE)
    login(backend, outbox, "web-x", "+6281234567005")
    tickets = Tickets(backend.repo)
    report = tickets.open("web-x", "other", f"{hostile}\nbaris dua\tNIK 3201 1547 0762 0005 hp 0812-3456-7001",
                          "rest")
    handoff = tickets.start_handoff("web-y", "rest", [f"Warga: {hostile}"])
    assert channel_gate(backend.db, "web-y", f"{hostile} kode 482913", clock)[1] is not None
    # Rows stored before texts were escaped on the way in hold the raw characters (but NUL).
    backend.db.run(lambda cur: cur.execute(
        "INSERT INTO ticket_notes (ticket_id, at, author, note) VALUES (%s, %s, 'warga', %s)",
        (handoff.id, clock(), hostile.replace("\x00", "\\x00"))))

    listing = run_tickets(database_url, tmp_path, "list")
    assert report.reference in listing and handoff.reference in listing
    assert unsafe_characters(listing) == []
    for reference in (report.reference, handoff.reference):
        shown = run_tickets(database_url, tmp_path, "show", reference)
        assert unsafe_characters(shown, allowed="\n\t") == [], shown
        for escape in HOSTILE.values():
            assert escape in shown
    shown = run_tickets(database_url, tmp_path, "show", report.reference)
    # The second line of the description stays a line, indented under "uraian:".
    assert "\n        baris dua\tNIK 3201********0005 hp 0812****7001\n" in shown
    assert "3201154707620005" not in re.sub(r"\D", "", shown)
    shown = run_tickets(database_url, tmp_path, "show", handoff.reference)
    assert "kode ******" in shown and "482913" not in shown


@pytest.mark.parametrize("raw, escaped", list(HOSTILE.items()))
def test_for_staff_escapes_each_sequence(raw, escaped):
    assert for_staff(raw) == escaped
    assert for_staff(raw, keep_lines=True) == escaped
    assert unsafe_characters(for_staff(raw), allowed="") == []


def test_for_staff_keeps_lines_only_when_asked():
    assert for_staff("satu\ndua\tx") == "satu\\ndua\\tx"
    assert for_staff("satu\ndua\tx", keep_lines=True, indent="  ") == "satu\n  dua\tx"
    assert for_staff("satu\r\ndua\u2028tiga", keep_lines=True) == "satu\\r\ndua\\u2028tiga"
    assert for_staff("Halo kak 🙏🏽 sertifikat — éè 中文") == "Halo kak 🙏🏽 sertifikat — éè 中文"
    assert for_staff(None) == "" and for_staff("") == ""


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=80))
def test_for_staff_leaves_no_control_character(text):
    one_line = for_staff(text)
    assert unsafe_characters(one_line, allowed="") == []
    assert unsafe_characters(for_staff(text, keep_lines=True), allowed="\n\t") == []
    assert for_staff(one_line) == one_line  # applying it twice changes nothing


def test_log_lines_show_control_characters_as_escapes(caplog):
    logger = logging.getLogger("test.staff_text")
    caplog.handler.addFilter(MaskingFilter())
    try:
        with caplog.at_level(logging.INFO, logger="test.staff_text"):
            logger.info("pesan %s dari %s", "\x1b[2Jhalo\u202e", "0812-3456-7001")
            try:
                raise ValueError("teks \x1b]52;c;ZWNobyBoYWNrZWQ=\x07 NIK 3201 1547 0762 0005")
            except ValueError:
                logger.exception("gagal")
    finally:
        caplog.handler.removeFilter(caplog.handler.filters[-1])
    text = caplog.text
    assert "pesan \\x1b[2Jhalo\\u202e dari 0812****7001" in text
    assert "teks \\x1b]52;c;ZWNobyBoYWNrZWQ=\\x07 NIK 3201********0005" in text
    assert "Traceback" in text and unsafe_characters(text) == []
