"""Text shown to staff and written to logs: citizens' control characters cannot act on an
officer's terminal (`make tickets`, the logs), and the log masking finds phone numbers and NIKs
however people write them."""

from __future__ import annotations

import logging
import os
import re
import subprocess
import sys
import time
import unicodedata

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from actions import wording
from backend.logmask import MaskingFilter, mask_text
from backend.staff_text import for_staff
from backend.tickets import Tickets
from rasa_server.gate import channel_gate

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
    tickets = Tickets(backend.repo, wording.domain())
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


# --- 8. masking phone numbers and NIKs however they are written ----------------------------

SEPARATORS = [" ", "-", ".", "  ", " - ", ". ", " . ", "\u00a0", "--"]
FILLER = st.text(alphabet="abcdefghijklmnopqrstuvwxyz ABC:,;!?'\"\n", max_size=15)


def split_into_groups(draw, digits: str, low: int, high: int) -> list[str]:
    groups = []
    while digits:
        size = draw(st.integers(low, high))
        groups.append(digits[:size])
        digits = digits[size:]
    return groups


def joined(draw, groups: list[str]) -> str:
    same = draw(st.booleans())  # one separator throughout, or a mix
    first = draw(st.sampled_from(SEPARATORS))
    return groups[0] + "".join((first if same else draw(st.sampled_from(SEPARATORS))) + g for g in groups[1:])


@st.composite
def written_phones(draw) -> tuple[str, str]:
    """An Indonesian mobile number as people write it, and its national form (08...)."""
    rest = draw(st.from_regex(r"\A8[1-9][0-9]{7,10}\Z"))  # national 10-13 digits with the 0
    prefix = draw(st.sampled_from(["0", "62", "+62", "+62 ", "+62-", "(+62) ", "(+62)", "+62 (0)"]))
    groups = split_into_groups(draw, rest, 2, 5)
    if draw(st.booleans()):
        groups[0] = f"({groups[0]})" if prefix not in ("0", "62") else groups[0]
    if prefix in ("0", "62"):
        groups[0] = prefix + groups[0]
        if draw(st.booleans()):
            groups[0] = f"({groups[0]})"  # (0812) 3456 7001
    else:
        groups[0] = prefix + groups[0]
    return joined(draw, groups), "0" + rest


@st.composite
def written_niks(draw) -> tuple[str, str]:
    """A NIK (region, birth date with day + 40 for women, serial) grouped any way."""
    region = draw(st.from_regex(r"\A[1-9][0-9]{5}\Z"))
    day = draw(st.integers(1, 28)) + draw(st.sampled_from([0, 40]))
    month, year = draw(st.integers(1, 12)), draw(st.integers(0, 99))
    serial = draw(st.integers(0, 9999))
    nik = f"{region}{day:02d}{month:02d}{year:02d}{serial:04d}"
    layout = draw(st.sampled_from(["4444", "222264", "664", "16", "any"]))
    if layout == "any":
        groups = split_into_groups(draw, nik, 1, 8)
    else:
        sizes, groups, at = [int(c) for c in (layout if layout != "16" else "")] or [16], [], 0
        for size in sizes:
            groups.append(nik[at:at + size])
            at += size
    label = draw(st.sampled_from(["", "NIK: ", "NIK ", "nik:", "nik", "no KTP ", "NIK = "]))
    return label + joined(draw, groups), nik


def survivors(masked: str, original: str, window: int = 8) -> list[str]:
    """Runs of `window` consecutive digits of `original` still readable in `masked`: within
    each stretch of digits and separators (a mask character or a letter ends it), separators
    taken out."""
    found = []
    for stretch in re.split(r"[^0-9 \u00a0.\-()+]", masked):
        digits = re.sub(r"\D", "", stretch)
        found += [original[k:k + window] for k in range(len(original) - window + 1)
                  if original[k:k + window] in digits]
    return found


# The property: no 8 consecutive digits of the number are left, and at least 4 are hidden
# ("*"). The masks keep the first 4 and up to the last 4 digits, never adjacent; 8 in a row
# would be more than a mask shows (a NIK's district and birth date, most of a phone number).
@settings(max_examples=250, deadline=None)
@given(written_phones(), FILLER, FILLER)
@example(("0812.3456.7001", "081234567001"), "hp ", ".")
@example(("(0812) 3456 7001", "081234567001"), "", "")
@example(("0812  3456  7001", "081234567001"), "no: ", "")
@example(("+62 812-3456 7001", "081234567001"), "", " ok")
def test_no_phone_number_survives_however_written(phone, before, after):
    written, national = phone
    masked = mask_text(before + written + after)
    assert survivors(masked, national) == [] and survivors(masked, re.sub(r"\D", "", written)) == [], masked
    assert masked.count("*") >= 4 and masked.startswith(before) and masked.endswith(after)


@settings(max_examples=250, deadline=None)
@given(written_niks(), FILLER, FILLER)
@example(("3201 1547 0762 0005", "3201154707620005"), "", "")
@example(("3201.1547.0762.0005", "3201154707620005"), "nik saya ", ".")
@example(("NIK: 3201-1547-0762-0005", "3201154707620005"), "", "")
@example(("32 01 15 470762 0005", "3201154707620005"), "", "")
def test_no_nik_survives_however_written(nik, before, after):
    written, digits = nik
    masked = mask_text(before + written + after)
    assert survivors(masked, digits) == [], masked
    assert "********" in masked and masked.startswith(before) and masked.endswith(after)


@settings(max_examples=300, deadline=None)
@given(written_niks(), written_phones(), st.from_regex(r"\A[0-9]{6}\Z"), st.sampled_from(SEPARATORS),
       st.sampled_from(["", "tgl 2021-07-05 ", "05-07-2021 ", "dosis 2 "]))
def test_numbers_typed_one_after_the_other_are_all_masked(nik, phone, code, separator, date):
    """Nothing but a separator between them: one run of digits, cut at the right places. The
    digits left are exactly those of the date and of each number masked on its own (checked
    above); the code shows none."""
    masked = mask_text(f"{date}{phone[0]}{separator}{nik[0]}{separator}{code}")
    visible = re.sub(r"\D", "", date + mask_text(phone[0]) + mask_text(nik[0]))
    assert re.sub(r"\D", "", masked) == visible, masked
    assert masked.startswith(date) and masked.endswith("******")


@pytest.mark.parametrize("text", [
    "vaksin tgl 2021-07-05 dan 05/07/2021, lagi 05-07-2021 02-08-2021",
    "tiket PL-2026-000001 dan PL-2026-123456",
    "biaya Rp 1.500.000 atau Rp 150.000.000.000, 2.500,00",
    "2026-11-29 08:00:00,123 INFO listening on 127.0.0.1:5005 (rasa 3.6.21, 192.168.100.100)",
    "dosis 2 tanggal 14 Februari 2022 jam 08.30, antrean 12 orang, kode pos 40115",
    "HC1:NCFOXN%TS3DH3ZSUZK+.V0ETD%65NL-AH-R6IOOA% 1234567",
])
def test_ordinary_numbers_are_left_as_written(text):
    assert mask_text(text) == text


@pytest.mark.parametrize("line", [
    "1 " * 5000,
    "0812 " * 2000,
    "123456 " * 1430,
    "3201.1547.0762.0005 " * 500,
    "(0812) 3456-7001 " * 590,
    "9" * 10000,
    "1-" * 5000,
    "+(" * 5000,
    "2021-07-05 " * 900,
], ids=["1-space", "0812-space", "codes", "dotted-niks", "phones-in-parentheses", "digits", "1-dash",
        "plus-parenthesis", "dates"])
def test_masking_a_long_line_is_fast(line):
    """The filter runs on every log line: a 10 kB line of digits and separators in well under
    100 ms (best of three, the machine is shared)."""
    times = []
    for _ in range(3):
        started = time.perf_counter()
        mask_text(line)
        times.append(time.perf_counter() - started)
    assert min(times) < 0.1, f"{min(times) * 1000:.1f} ms"
