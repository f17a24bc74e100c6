"""Parsers of what citizens type: every common form accepted, everything else a precise reason."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from backend.identifiers import (InvalidInput, mask_nik, mask_phone, parse_email, parse_name, parse_nik,
                                 parse_otp, parse_phone)

DEMO_NIKS = ["3174011501900001", "3174014203100002", "3273025708850003", "3578030101000004",
             "5171014404950005", "3201016512920006"]


@pytest.mark.parametrize("typed", [
    "081234567001", "0812-3456-7001", "0812 3456 7001", "+62 812 3456 7001", "+6281234567001",
    "6281234567001", "62 812-3456-7001", "no hp sy 0812 3456 7001 kak", "(0812) 3456-7001",
])
def test_phone_in_every_common_form(typed):
    assert parse_phone(typed) == "+6281234567001"


@pytest.mark.parametrize("typed, reason", [
    ("", "empty"), ("   ", "empty"), ("nomor saya", "not_found"), ("08123", "not_found"),
    ("+65 8123 4567", "foreign"), ("021-1234567", "not_mobile"),
])
def test_phone_rejections_say_why(typed, reason):
    with pytest.raises(InvalidInput) as caught:
        parse_phone(typed)
    assert caught.value.reason == reason


def test_phone_mask_keeps_prefix_and_last_four():
    assert mask_phone("+6281234567001") == "0812****7001"


@pytest.mark.parametrize("nik", DEMO_NIKS)
def test_demo_niks_are_valid_and_masked(nik):
    assert parse_nik(nik) == nik
    assert parse_nik(" ".join([nik[:4], nik[4:8], nik[8:12], nik[12:]])) == nik
    masked = mask_nik(nik)
    assert masked == nik[:4] + "********" + nik[-4:]


@pytest.mark.parametrize("typed, reason", [
    ("", "empty"), ("nik saya", "empty"), ("317401150190", "length"),
    ("1234567890123456", "component"),   # no such province
    ("3174013201900001", "component"),   # day 32
    ("3174017201900001", "component"),   # day 72 - 40 = 32, women's rule
])
def test_nik_rejections_say_why(typed, reason):
    with pytest.raises(InvalidInput) as caught:
        parse_nik(typed)
    assert caught.value.reason == reason


@pytest.mark.parametrize("typed", ["123456", "123 456", "123-456", "kodenya 123456 kak", " 1 2 3 4 5 6 "])
def test_otp_forms(typed):
    assert parse_otp(typed) == "123456"


@pytest.mark.parametrize("typed", ["12345", "1234567", "123456 654321", "abcdef", "", "12 34 56 78"])
def test_otp_rejections(typed):
    with pytest.raises(InvalidInput):
        parse_otp(typed)


def test_email_and_name():
    assert parse_email("email baru Budi.Santoso@Example.com ya") == "Budi.Santoso@example.com"
    with pytest.raises(InvalidInput):
        parse_email("budi at example dot com")
    assert parse_name("  AGUS   WIJAYA ") == "Agus Wijaya"
    assert parse_name("Ni Luh Putu Ayu Lestari") == "Ni Luh Putu Ayu Lestari"
    assert parse_name("Muh. Nur'aini Al-Farisi") == "Muh. Nur'aini Al-Farisi"
    for bad in ["", "x", "Budi123", "<script>", "Budi; DROP TABLE citizens"]:
        with pytest.raises(InvalidInput):
            parse_name(bad)


PARSERS = [parse_phone, parse_nik, parse_otp, parse_email, parse_name]


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=600))
def test_parsers_never_raise_anything_but_invalid_input(text):
    for parse in PARSERS:
        try:
            parse(text)
        except InvalidInput:
            pass


@settings(max_examples=200, deadline=None)
@given(st.from_regex(r"\A(\+62|62|0)8[1-9][0-9]{7,9}\Z"), st.sampled_from(["", " ", "-"]))
def test_valid_phone_shapes_normalise_to_e164(number, separator):
    typed = separator.join([number[:4], number[4:8], number[8:]])
    try:
        phone = parse_phone(typed)
    except InvalidInput as exc:
        assert exc.reason in ("not_found", "not_mobile")
        return
    assert phone.startswith("+628") and phone[1:].isdigit()
    assert parse_phone(phone) == phone
