"""Parsing, validation and masking of what citizens type: phone numbers, NIK, OTP codes, e-mail, names.

Each parser takes free text ("no hp sy 0812-3456-7001 kak") and returns the normalised value,
or raises InvalidInput whose `reason` names what was wrong, so the assistant can give a
specific hint. Phone numbers use phonenumbers, NIK python-stdnum, e-mail email-validator.
"""

from __future__ import annotations

import re
import unicodedata

import phonenumbers
from email_validator import EmailNotValidError, validate_email
from stdnum.exceptions import InvalidComponent, InvalidLength, ValidationError
from stdnum.id import nik as stdnum_nik

MAX_INPUT = 500  # longer messages are not a phone number, a code or a name


class InvalidInput(ValueError):
    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


# --- phone numbers -------------------------------------------------------------------------

_MOBILE_TYPES = {
    phonenumbers.PhoneNumberType.MOBILE,
    phonenumbers.PhoneNumberType.FIXED_LINE_OR_MOBILE,
}


def parse_phone(text: str) -> str:
    """An Indonesian mobile number in E.164 (+62...), from 08.., +62.., 62.., with spaces or dashes.

    Reasons: "empty", "not_found", "foreign", "not_mobile".
    """
    text = (text or "")[:MAX_INPUT].strip()
    if not text:
        raise InvalidInput("empty")
    candidates = [m.number for m in phonenumbers.PhoneNumberMatcher(text, "ID")]
    if not candidates:
        try:
            candidates = [phonenumbers.parse(text, "ID")]
        except phonenumbers.NumberParseException:
            raise InvalidInput("not_found") from None
    number = candidates[0]
    if number.country_code != 62:
        raise InvalidInput("foreign")
    if not phonenumbers.is_valid_number(number):
        raise InvalidInput("not_found")
    if phonenumbers.number_type(number) not in _MOBILE_TYPES:
        raise InvalidInput("not_mobile")
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def mask_phone(e164: str) -> str:
    """+6281234567001 -> 0812****7001: enough for the citizen to recognise their number."""
    national = "0" + e164[3:] if e164.startswith("+62") else e164
    if len(national) < 8:
        return "*" * len(national)
    return national[:4] + "*" * (len(national) - 8) + national[-4:]


# --- NIK -----------------------------------------------------------------------------------

_DIGIT_RUN = re.compile(r"\d[\d\s.\-]*\d|\d")


def _digit_runs(text: str) -> list[str]:
    return [re.sub(r"\D", "", run) for run in _DIGIT_RUN.findall(text)]


def parse_nik(text: str) -> str:
    """A 16-digit NIK checked by python-stdnum (region, date of birth with the +40 rule for women).

    Reasons: "empty", "length", "component".
    """
    text = (text or "")[:MAX_INPUT]
    runs = _digit_runs(text)
    if not runs:
        raise InvalidInput("empty")
    candidate = next((run for run in runs if len(run) == 16), max(runs, key=len))
    try:
        return stdnum_nik.validate(candidate)
    except InvalidLength:
        raise InvalidInput("length") from None
    except (InvalidComponent, ValidationError):
        raise InvalidInput("component") from None


def mask_nik(nik: str) -> str:
    """3174011501900001 -> 3174********0001, the form shown to citizens."""
    nik = nik.strip()
    return nik[:4] + "*" * (len(nik) - 8) + nik[-4:]


# --- OTP codes -----------------------------------------------------------------------------

_OTP = re.compile(r"(?<![\d])(\d(?:[\s\-]?\d){5})(?![\d])")


def parse_otp(text: str) -> str:
    """Exactly six digits, possibly typed as "123 456" or "123-456". Reasons: "empty", "format"."""
    text = (text or "")[:MAX_INPUT].strip()
    if not text:
        raise InvalidInput("empty")
    found = _OTP.findall(text)
    if len(found) != 1 or len(re.sub(r"\D", "", text)) != 6:
        raise InvalidInput("format")
    return re.sub(r"\D", "", found[0])


# --- e-mail and names ----------------------------------------------------------------------


def parse_email(text: str) -> str:
    """A syntactically valid e-mail address (no DNS look-up). Reasons: "empty", "format"."""
    text = (text or "")[:MAX_INPUT].strip()
    if not text:
        raise InvalidInput("empty")
    candidates = [tok.strip(".,;:()<>\"'") for tok in text.split() if "@" in tok]
    if len(candidates) != 1:
        raise InvalidInput("format")
    try:
        return validate_email(candidates[0], check_deliverability=False).normalized
    except EmailNotValidError:
        raise InvalidInput("format") from None


_NAME_ALLOWED = re.compile(r"^[^\W\d_]+(?:[ .'\-][^\W\d_]*)*$")


def parse_name(text: str) -> str:
    """A full name as on the KTP: letters with spaces, dots, apostrophes, hyphens; 2-100 characters.

    Reasons: "empty", "length", "characters".
    """
    text = unicodedata.normalize("NFC", (text or "")[:MAX_INPUT])
    name = " ".join(text.split()).strip(" .")
    if not name:
        raise InvalidInput("empty")
    if len(name) < 2 or len(name) > 100:
        raise InvalidInput("length")
    if not _NAME_ALLOWED.match(name):
        raise InvalidInput("characters")
    if name.isupper() or name.islower():
        name = " ".join(part[:1].upper() + part[1:].lower() for part in name.split(" "))
    return name
