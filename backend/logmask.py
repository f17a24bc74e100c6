"""A logging filter that masks personal data in every log line: NIK, phone numbers, OTP codes,
e-mail addresses and certificate download tokens.

Installed on the handlers of both processes (logging.yml for Rasa, actions/server.py for the
action server), so a careless log call, a library's log line or an exception text cannot
leak them. What the citizen is shown is masked separately (backend.identifiers). The same
masking is applied to chat texts before they are stored for officers (backend.tickets).

How numbers are found: a *run* is digit groups joined by short separators, the ways people
write "0812.3456.7001", "(0812) 3456 7001", "+62 812-3456-7001", "3201 1547 0762 0005" or
"32 01 15 470762 0005". A run that is as a whole a NIK (16 digits), an Indonesian mobile
number (08.., 628.., +62 8.., 10-13 digits) or a six-digit code is masked. A longer run (a
NIK and a phone typed one after the other, a date before a NIK) is cut at group boundaries
into the pieces that cover the most digits as NIKs (with a plausible birth date), mobile
numbers, six-digit groups and dates (kept); what is left of 16 digits or more is masked
anyway. Dates, amounts, IP addresses and ticket numbers (PL-2026-000001) stay as written.
Masks keep the first 4 and at most the last 4 digits, and hide at least 4.

Linear time: the run pattern has no nested quantifiers over overlapping classes, and cutting
a run looks at most 16 groups ahead of each group.
"""

from __future__ import annotations

import logging
import re

from stdnum.exceptions import ValidationError
from stdnum.id import nik as stdnum_nik

from .staff_text import for_staff

# Separators between digit groups: spaces (also non-breaking), dots, dashes, parentheses and
# the invisible zero-width characters, at most four in a row ("0812 - 3456", "(0812)  3456").
_SEP = " \u00a0.\\-()\u200b\u200c\u200d\u2060\ufeff"
_RUN = re.compile(rf"(?<!\d)\+?\(?\+?\d+(?:[{_SEP}]{{1,4}}\d+)*\)?")
_GROUP = re.compile(r"\d+")
_EMAIL = re.compile(r"([A-Za-z0-9._%+\-])[A-Za-z0-9._%+\-]*@([A-Za-z0-9.\-]+\.[A-Za-z]{2,})")
_TOKEN = re.compile(r"(/certificates/)[A-Za-z0-9_\-]+")
_AFTER_WORD = re.compile(r"[A-Za-z][\-/]\Z")
_LONGEST = 16  # digits of the longest identifier (a NIK)
_LENGTHS = frozenset({6, 10, 11, 12, 13, 14, 15, 16})  # of a code, a mobile (with 62), a NIK


def _national_mobile(digits: str) -> str | None:
    """08xxxxxxxx(x..) for an Indonesian mobile number written as 08.., 628.., 6208.., else None."""
    if digits.startswith("620"):
        digits = digits[2:]
    elif digits.startswith("62"):
        digits = "0" + digits[2:]
    return digits if digits[:2] == "08" and digits[2:3] != "0" and 10 <= len(digits) <= 13 else None


def _mask_mobile(national: str) -> str:
    # The operator prefix and up to the last 4 digits, always hiding at least 4 (10^4 numbers
    # fit one masked 10-digit number, as many as a 12-digit one gets).
    return national[:4] + "****" + national[len(national) - min(4, len(national) - 8):]


def _mask_nik(digits: str) -> str:
    return digits[:4] + "********" + digits[-4:]


def _plausible_nik(digits: str) -> bool:
    """16 digits with a NIK's birth date (day, or day + 40, and month): cuts a NIK out of
    a longer run at the right place; stdnum's region table is not consulted."""
    if len(digits) != 16 or digits[0] == "0" or not ("01" <= digits[8:10] <= "12"):
        return False
    try:
        stdnum_nik.get_birth_date(digits)
    except (ValidationError, ValueError):
        return False
    return True


def _identifier(digits: str, code_allowed: bool) -> str | None:
    """The masked form of one piece of a run, or None when the piece is no identifier."""
    national = _national_mobile(digits)
    if national:
        return _mask_mobile(national)
    if _plausible_nik(digits):
        return _mask_nik(digits)
    if code_allowed and len(digits) == 6:
        return "******"
    return None


def _is_date(a: str, b: str, c: str) -> bool:
    """Three groups that read as a date: 2021-07-05 or 05-07-2021 (also 5.7.2021)."""
    if len(a) == 4 and len(b) <= 2 and len(c) <= 2:
        a, c = c, a
    return (len(c) == 4 and c[:2] in ("19", "20") and len(a) <= 2 and len(b) <= 2
            and 1 <= int(a) <= 31 and 1 <= int(b) <= 12)


def _mask_long(digits: str) -> str:
    """Digits that hold no identifier we know but are long enough to hide one."""
    return digits[:4] + "*" * (len(digits) - 8) + digits[-4:]


def _mask_run(match: re.Match) -> str:
    run, text, end = match.group(0), match.string, match.end()
    # After "PL-" or "HC1/" the run is the tail of a code (a ticket number): no six-digit group
    # in it is an OTP; nor is one that a letter follows ("ab123456cd" in an id).
    in_code = bool(_AFTER_WORD.search(text, max(0, match.start() - 2), match.start()))
    word_after = end < len(text) and (text[end].isalnum() or text[end] == "_")
    groups = [(g.start(), g.end(), g.group()) for g in _GROUP.finditer(run)]
    digits = "".join(g[2] for g in groups)

    # The run as a whole: any 16 digits count as a NIK here (a mistyped one too); six digits
    # as a code only without dots ("482 913", not "127.0.0.1").
    if len(groups) % 3 == 0 and all(_is_date(*(g[2] for g in groups[k:k + 3])) for k in range(0, len(groups), 3)):
        return run  # "05-07-2021 02-08-2021"
    if len(digits) == _LONGEST:
        return _mask_nik(digits)
    national = _national_mobile(digits)
    if national:
        return _mask_mobile(national)
    if len(digits) == 6:
        return "******" if not in_code and not word_after and "." not in run else run
    if len(groups) == 1 or len(digits) < 6:
        return _mask_long(digits) if len(digits) > _LONGEST else run

    # Cut the run at group boundaries into pieces covering the most digits: identifiers, and
    # dates, which are kept as written (so that "2021-07-05 0812..." is not read as a NIK).
    # score[i] is (digits covered, minus the pieces used: fewer win a tie, then the longer
    # first piece) from group i on; step[i] the piece taken there: its last group and its
    # mask ("" for a date, None when group i stays as it is). A code is one six-digit group.
    n = len(groups)
    score, step = [(0, 0)] * (n + 1), [(0, None)] * n
    for i in range(n - 1, -1, -1):
        score[i], step[i] = score[i + 1], (i, None)
        if i + 3 <= n and _is_date(*(g[2] for g in groups[i:i + 3])):
            date = (sum(len(g[2]) for g in groups[i:i + 3]) + score[i + 3][0], score[i + 3][1] - 1)
            if date > score[i]:
                score[i], step[i] = date, (i + 2, "")
        joined = ""
        for j in range(i, n):
            joined += groups[j][2]
            if len(joined) > _LONGEST:
                break
            if len(joined) not in _LENGTHS:
                continue
            after = score[j + 1]
            candidate = (len(joined) + after[0], after[1] - 1)
            if candidate > score[i] or (candidate == score[i] and step[i][1]):  # the longer piece
                masked = _identifier(joined, i == j and not in_code and not (word_after and j == n - 1))
                if masked is not None:
                    score[i], step[i] = candidate, (j, masked)
    pieces, i = [], 0
    while i < n:
        j, masked = step[i]
        pieces.append((i, j, masked))
        i = j + 1
    return _render(run, groups, pieces)


def _render(run: str, groups: list, pieces: list) -> str:
    """The run with each identifier replaced by its mask and the rest (separators, dates,
    amounts) as written, except that leftover groups adding up to 16 digits or more, which
    could still be a NIK, are masked too."""
    segments, k = [], 0
    while k < len(pieces):
        first, last, masked = pieces[k]
        k += 1
        if masked is None:
            while k < len(pieces) and pieces[k][2] is None:
                last = pieces[k][1]
                k += 1
            leftover = "".join(g[2] for g in groups[first:last + 1])
            masked = _mask_long(leftover) if len(leftover) >= _LONGEST else None
        segments.append((first, last, masked))
    out, pos = [], 0
    for first, last, masked in segments:
        start = 0 if first == 0 else groups[first][0]  # a leading "+" or "(" goes with it
        out.append(run[pos:start])
        out.append(masked or run[start:groups[last][1]])
        pos = groups[last][1]
    out.append(run[pos:])
    return "".join(out)


def mask_text(text: str) -> str:
    text = _TOKEN.sub(r"\1***", text)
    text = _RUN.sub(_mask_run, text)
    return _EMAIL.sub(r"\1***@\2", text)


class MaskingFilter(logging.Filter):
    """Masks personal data, then shows control characters visibly (an escape sequence in a
    citizen's text must not act on the terminal of whoever reads the log)."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        masked = for_staff(mask_text(message), keep_lines=True)
        if masked != message:
            record.msg, record.args = masked, ()
        if record.exc_info:
            text = logging.Formatter().formatException(record.exc_info)
            record.exc_text = for_staff(mask_text(text), keep_lines=True)
            record.exc_info = None
        return True


def install(logger: logging.Logger | None = None) -> None:
    """Add the filter to every handler of `logger` (the root logger by default)."""
    for handler in (logger or logging.getLogger()).handlers:
        if not any(isinstance(f, MaskingFilter) for f in handler.filters):
            handler.addFilter(MaskingFilter())
