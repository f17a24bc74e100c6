"""Signed certificates: the HC1 payload, its keys, `make verify-certificate`, /verifikasi and the PDF's QR."""

from __future__ import annotations

import base64
import io
import os
import re
import shutil
import subprocess
import zlib
from dataclasses import replace
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

import base45
import cbor2
import pytest
import segno
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given, settings
from hypothesis import strategies as st
from pypdf import PdfReader

from backend import Settings
from backend.certificates import QR_MASK, claims_of, holder_rows, qr_payload
from backend.settings import verification_keys
from backend.signing import (Claims, Expired, InvalidFormat, InvalidSignature, KeyFormatError, UnknownKey,
                             UnsupportedFormat, VerificationError, encode_key, key_id, private_key_from_text,
                             public_bytes, public_keys_from_text, sign, verify)
from tools import verify_certificate

ROOT = Path(__file__).resolve().parent.parent
KEY = Ed25519PrivateKey.from_private_bytes(bytes(range(32)))  # tests only
OTHER_KEY = Ed25519PrivateKey.from_private_bytes(bytes(range(1, 33)))
ISSUED = datetime(2022, 2, 15, 3, 0, tzinfo=timezone.utc)

# Budi's booster, as certificate_by_token returns it.
BUDI = {"certificate_id": 3, "version": 1, "full_name": "Budi Santoso", "nik": "3174011501900001",
        "birth_date": date(1990, 1, 15), "dose": 3, "vaccine": "Comirnaty (Pfizer)",
        "vaccinated_on": date(2022, 2, 14), "facility": "RSUD Pasar Minggu",
        "certificate_number": "SV-202202-000013", "issued_at": ISSUED}
CLAIMS = claims_of(BUDI)
PAYLOAD = sign(CLAIMS, KEY)


def public_env(*keys) -> str:
    return ",".join(encode_key(public_bytes(k.public_key())) for k in keys)


def cose(protected: dict, payload: dict, key: Ed25519PrivateKey, unprotected: dict | None = None) -> str:
    """A payload built by hand from the format in backend/signing.py's docstring."""
    protected_bytes, payload_bytes = cbor2.dumps(protected), cbor2.dumps(payload)
    signature = key.sign(cbor2.dumps(["Signature1", protected_bytes, b"", payload_bytes]))
    message = cbor2.dumps(cbor2.CBORTag(18, [protected_bytes, unprotected or {}, payload_bytes, signature]))
    return "HC1:" + base45.b45encode(zlib.compress(message, 9)).decode()


def unpack(payload: str):
    return cbor2.loads(zlib.decompress(base45.b45decode(payload[4:])))


# --- the payload ------------------------------------------------------------------------------


def test_round_trip_and_the_documented_format():
    assert verify(PAYLOAD, [KEY.public_key()]) == CLAIMS
    assert sign(CLAIMS, KEY) == PAYLOAD  # deterministic: the PDF cache stays right
    message = unpack(PAYLOAD)
    assert message.tag == 18
    protected, unprotected, payload, signature = message.value
    assert cbor2.loads(protected) == {1: -8, 4: key_id(KEY.public_key())} and len(key_id(KEY.public_key())) == 8
    assert unprotected == {} and len(signature) == 64
    assert cbor2.loads(payload) == {
        1: "Asisten Sertifikat Vaksin (demo)", 6: int(ISSUED.timestamp()),
        -260: {1: {"ver": 1, "nam": "Budi Santoso", "dob": "1990-01-15", "dn": 3, "mp": "Comirnaty (Pfizer)",
                   "dt": "2022-02-14", "ci": "SV-202202-000013"}}}
    # The NIK is not in it, not even in part.
    assert b"3174" not in zlib.decompress(base45.b45decode(PAYLOAD[4:]))
    # Pasted text often brings white space at the ends.
    assert verify(f"  {PAYLOAD}\n", [KEY.public_key()]) == CLAIMS


def test_a_handmade_payload_in_the_documented_format_verifies():
    text = cose({1: -8, 4: key_id(KEY.public_key())},
                {1: "X", 6: 0, -260: {1: {"ver": 1, "nam": "A", "dob": "2000-01-01", "dn": 1, "mp": "V",
                                          "dt": "2021-01-01", "ci": "C"}}}, KEY)
    claims = verify(text, [KEY.public_key()])
    assert (claims.full_name, claims.dose, claims.issuer) == ("A", 1, "X")


def zlib_ignored_alterations(payload: str) -> list[str]:
    """Single-character alterations that zlib decompresses to the very same bytes: they change
    only the padding bits of the last compressed byte, which inflate never reads."""
    body = zlib.decompress(base45.b45decode(payload[4:]))
    found = []
    for i in range(len(payload) - 15, len(payload)):
        for c in base45.BASE45_CHARSET:
            altered = payload[:i] + c + payload[i + 1:]
            try:
                if altered != payload and zlib.decompress(base45.b45decode(altered[4:])) == body:
                    found.append(altered)
            except (ValueError, zlib.error):
                pass
    return found


# About one certificate in eight has such alterations; the first of these demo numbers does.
SLACK_PAYLOAD = next(p for p in (sign(replace(CLAIMS, certificate_number=f"SV-202202-{n:06d}"), KEY)
                                 for n in range(200)) if zlib_ignored_alterations(p))


def test_alterations_that_zlib_ignores_are_refused_too():
    ignored = zlib_ignored_alterations(SLACK_PAYLOAD)
    assert ignored
    for altered in ignored:
        with pytest.raises(InvalidFormat, match="tidak dalam bentuk aslinya"):
            verify(altered, [KEY.public_key()])


@pytest.mark.parametrize("payload", [PAYLOAD, SLACK_PAYLOAD], ids=["budi", "with-zlib-padding"])
def test_every_single_character_alteration_is_refused(payload):
    """Each position replaced by every other Base45 character and by a few outside it, removed,
    and doubled."""
    keys = [KEY.public_key()]
    alphabet = base45.BASE45_CHARSET + "a\n\t~é"
    tried = 0
    for i, original in enumerate(payload):
        variants = [payload[:i] + c + payload[i + 1:] for c in alphabet if c != original]
        variants += [payload[:i] + payload[i + 1:], payload[:i] + original + payload[i:]]
        for altered in variants:
            if altered.strip() == payload:
                continue  # white space added at an end is the same text pasted
            tried += 1
            with pytest.raises(VerificationError):
                verify(altered, keys)
    assert tried > 40 * len(payload)


@settings(max_examples=300, deadline=None)
@given(st.integers(min_value=4), st.sampled_from(base45.BASE45_CHARSET), st.integers(0, 2 ** 31))
def test_alterations_of_other_payloads_are_refused(position, char, serial):
    """The same over many certificates, since which bits zlib ignores depends on the content."""
    payload = sign(replace(CLAIMS, certificate_number=f"SV-202202-{serial:06d}"), KEY)
    position %= len(payload)
    altered = payload[:position] + char + payload[position + 1:]
    if altered != payload:
        with pytest.raises(VerificationError):
            verify(altered, [KEY.public_key()])


def test_another_key_or_a_forged_kid_is_refused():
    with pytest.raises(UnknownKey):
        verify(PAYLOAD, [OTHER_KEY.public_key()])
    with pytest.raises(UnknownKey):
        verify(sign(CLAIMS, OTHER_KEY), [KEY.public_key()])
    # Someone else's key, our kid: found, and the signature does not match.
    with pytest.raises(InvalidSignature):
        verify(sign(CLAIMS, OTHER_KEY, kid=key_id(KEY.public_key())), [KEY.public_key()])
    with pytest.raises(UnknownKey, match="tidak dikenal"):
        verify(PAYLOAD, [])


def test_rotation_keeps_old_certificates_valid():
    keys = [OTHER_KEY.public_key(), KEY.public_key()]
    assert verify(PAYLOAD, keys) == CLAIMS
    assert verify(sign(CLAIMS, OTHER_KEY), keys) == CLAIMS


@pytest.mark.parametrize("text, error", [
    ("", InvalidFormat), ("   \n", InvalidFormat), ("halo", InvalidFormat), ("HC1:", InvalidFormat),
    ("HC1:ABC", InvalidFormat), ("HC1:!!!!", InvalidFormat), ("HC1:hc1", InvalidFormat),
    ("hc1:" + PAYLOAD[4:], InvalidFormat), ("HC2:" + PAYLOAD[4:], UnsupportedFormat),
    ("SERTIFIKAT-VAKSIN-COVID19:SV-202202-000013", UnsupportedFormat),
    ("HC1:" + "0" * 5000, InvalidFormat),
    ("HC1:" + base45.b45encode(zlib.compress(b"not cbor \xff\xff")).decode(), InvalidFormat),
    ("HC1:" + base45.b45encode(zlib.compress(cbor2.dumps([1, 2, 3]))).decode(), UnsupportedFormat),
    ("HC1:" + base45.b45encode(zlib.compress(cbor2.dumps(cbor2.CBORTag(18, [b"", {}, b""])))).decode(), InvalidFormat),
    ("HC1:" + base45.b45encode(cbor2.dumps(cbor2.CBORTag(18, [b"", {}, b"", b""]))).decode(), InvalidFormat),
    ("HC1:" + base45.b45encode(zlib.compress(b"\0" * 1_000_000, 9)).decode(), InvalidFormat),  # zlib bomb
    ("HC1:" + base45.b45encode(zlib.compress(cbor2.dumps(cbor2.CBORTag(18, [b"\x5f\x41a\xff", {}, b"", b""])))).decode(),
     InvalidFormat),
])
def test_garbage_is_refused_with_a_reason(text, error):
    with pytest.raises(error) as caught:
        verify(text, [KEY.public_key()])
    assert str(caught.value) and "\n" not in str(caught.value)


def test_every_truncation_is_refused():
    for end in range(len(PAYLOAD)):
        with pytest.raises(VerificationError):
            verify(PAYLOAD[:end], [KEY.public_key()])
    with pytest.raises(VerificationError):
        verify(PAYLOAD + "A", [KEY.public_key()])


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.text(max_size=600), st.text(alphabet=base45.BASE45_CHARSET, max_size=600).map(lambda s: "HC1:" + s),
                 st.binary(max_size=400).map(lambda b: "HC1:" + base45.b45encode(zlib.compress(b)).decode())))
def test_any_input_gives_claims_or_a_verification_error(text):
    with pytest.raises(VerificationError):
        verify(text, [KEY.public_key()])


def test_what_the_signature_does_not_cover_or_we_do_not_support_is_refused():
    kid = key_id(KEY.public_key())
    body = unpack(PAYLOAD).value[2]
    claims = cbor2.loads(body)
    with pytest.raises(InvalidFormat, match="tanpa tanda tangan"):
        verify(cose({1: -8, 4: kid}, claims, KEY, unprotected={4: kid}), [KEY.public_key()])
    with pytest.raises(UnsupportedFormat, match="algoritme"):
        verify(cose({1: -7, 4: kid}, claims, KEY), [KEY.public_key()])
    with pytest.raises(InvalidFormat, match="kid"):
        verify(cose({1: -8}, claims, KEY), [KEY.public_key()])
    newer = {**claims, -260: {1: {**claims[-260][1], "ver": 2}}}
    with pytest.raises(UnsupportedFormat, match="versi 2"):
        verify(cose({1: -8, 4: kid}, newer, KEY), [KEY.public_key()])
    broken = {**claims, -260: {1: {**claims[-260][1], "dn": "tiga"}}}
    with pytest.raises(InvalidFormat, match="kolom"):
        verify(cose({1: -8, 4: kid}, broken, KEY), [KEY.public_key()])


def test_expiry_when_the_payload_carries_one():
    expiring = replace(CLAIMS, expires_at=datetime(2027, 1, 1, tzinfo=timezone.utc))
    payload = sign(expiring, KEY)
    assert verify(payload, [KEY.public_key()], now=datetime(2026, 12, 31, tzinfo=timezone.utc)) == expiring
    with pytest.raises(Expired, match="kedaluwarsa"):
        verify(payload, [KEY.public_key()], now=datetime(2027, 1, 1, tzinfo=timezone.utc))
    assert ("Berlaku sampai", "1 Januari 2027") in holder_rows(expiring)


# --- keys and settings ------------------------------------------------------------------------


def test_keys_as_base64_or_pem():
    seed = encode_key(bytes(range(32)))
    pem = KEY.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption()).decode()
    for text in (seed, pem, f"\n{pem}\n", base64.urlsafe_b64encode(bytes(range(32))).decode()):
        assert public_bytes(private_key_from_text(text).public_key()) == public_bytes(KEY.public_key())
    public_pem = KEY.public_key().public_bytes(serialization.Encoding.PEM,
                                               serialization.PublicFormat.SubjectPublicKeyInfo).decode()
    keys = public_keys_from_text(f"{public_env(OTHER_KEY)},\n{public_pem}")
    assert [key_id(k) for k in keys] == [key_id(KEY.public_key()), key_id(OTHER_KEY.public_key())]
    for bad in ("", "not a key", encode_key(b"short"), "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----"):
        with pytest.raises(KeyFormatError) as caught:
            private_key_from_text(bad)
        assert "not a key" not in str(caught.value)  # the value itself is never in the message
    with pytest.raises(KeyFormatError):
        public_keys_from_text(" , ")


def test_development_key_is_kept_under_var_secrets(tmp_path):
    first = Settings.from_env({"VAR_DIR": str(tmp_path), "OTP_HASH_KEY": "x"})
    path = tmp_path / "secrets" / "certificate_signing_key"
    assert path.exists() and path.stat().st_mode & 0o777 == 0o600
    again = Settings.from_env({"VAR_DIR": str(tmp_path), "OTP_HASH_KEY": "x"})
    assert sign(CLAIMS, first.certificate_signing_key) == sign(CLAIMS, again.certificate_signing_key)
    assert verify(sign(CLAIMS, first.certificate_signing_key), again.certificate_public_keys) == CLAIMS
    assert [key_id(k) for k in verification_keys({"VAR_DIR": str(tmp_path)})] == [
        key_id(first.certificate_signing_key.public_key())]
    assert "certificate_signing_key=" not in repr(first)


def test_production_needs_the_key_and_its_public_half_in_the_list(tmp_path):
    env = {"VAR_DIR": str(tmp_path), "REQUIRE_SECRETS": "1", "OTP_HASH_KEY": "k" * 32 + "1",
           "ACTION_SERVER_TOKEN": "t" * 32 + "1"}  # production secrets: >= 32 bytes, not one character
    with pytest.raises(ValueError, match="CERTIFICATE_SIGNING_KEY must be set"):
        Settings.from_env(env)
    env["CERTIFICATE_SIGNING_KEY"] = encode_key(bytes(range(32)))
    settings_ = Settings.from_env(env)
    assert [key_id(k) for k in settings_.certificate_public_keys] == [key_id(KEY.public_key())]
    with pytest.raises(ValueError, match="must include the public key"):
        Settings.from_env({**env, "CERTIFICATE_PUBLIC_KEYS": public_env(OTHER_KEY)})
    rotated = Settings.from_env({**env, "CERTIFICATE_PUBLIC_KEYS": public_env(OTHER_KEY, KEY)})
    assert len(rotated.certificate_public_keys) == 2
    with pytest.raises(ValueError, match="CERTIFICATE_SIGNING_KEY"):
        Settings.from_env({**env, "CERTIFICATE_SIGNING_KEY": "PLACEHOLDER-CHANGE-ME"})
    # A verifier needs the public keys only.
    verifier_env = {"VAR_DIR": str(tmp_path / "v"), "REQUIRE_SECRETS": "1"}
    with pytest.raises(ValueError, match="CERTIFICATE_PUBLIC_KEYS must be set"):
        verification_keys(verifier_env)
    assert len(verification_keys({**verifier_env, "CERTIFICATE_PUBLIC_KEYS": public_env(KEY)})) == 1
    assert not (tmp_path / "secrets").exists() and not (tmp_path / "v").exists()


# --- make verify-certificate ------------------------------------------------------------------


@pytest.fixture
def verifier_env(monkeypatch, tmp_path):
    """An officer's machine: the public key, no private key, no development keys."""
    monkeypatch.setenv("CERTIFICATE_PUBLIC_KEYS", public_env(KEY))
    monkeypatch.setenv("REQUIRE_SECRETS", "1")
    monkeypatch.setenv("VAR_DIR", str(tmp_path))
    monkeypatch.delenv("CERTIFICATE_SIGNING_KEY", raising=False)


def test_command_prints_the_holder_and_exits_0_when_genuine(verifier_env, capsys):
    assert verify_certificate.main([PAYLOAD]) == 0
    out = capsys.readouterr().out
    for expected in ("ASLI", "Nama", "Budi Santoso", "Tanggal lahir", "15 Januari 1990", "Booster (Dosis 3)",
                     "Comirnaty (Pfizer)", "Tanggal vaksinasi", "14 Februari 2022", "SV-202202-000013"):
        assert expected in out, expected


@pytest.mark.parametrize("payload", [
    PAYLOAD[:50] + ("A" if PAYLOAD[50] != "A" else "B") + PAYLOAD[51:],
    sign(CLAIMS, OTHER_KEY),
    "HC2:" + PAYLOAD[4:],
    "bukan sertifikat",
    PAYLOAD[:-3],
])
def test_command_exits_1_with_one_line_when_refused(verifier_env, capsys, payload):
    assert verify_certificate.main([payload]) == 1
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.startswith("DITOLAK: ") and captured.err.count("\n") == 1


def test_command_exits_2_when_it_cannot_check(verifier_env, monkeypatch, capsys):
    assert verify_certificate.main([""]) == 2
    monkeypatch.delenv("CERTIFICATE_PUBLIC_KEYS")
    assert verify_certificate.main([PAYLOAD]) == 2
    assert "CERTIFICATE_PUBLIC_KEYS" in capsys.readouterr().err


def test_make_target_passes_the_text_as_typed(tmp_path):
    """Base45 has '$', which make would expand: the target must pass it through untouched."""
    payload = next(p for p in (sign(replace(CLAIMS, certificate_number=f"SV-{n}"), KEY) for n in range(500))
                   if "$" in p and " " in p)
    env = {**os.environ, "CERTIFICATE_PUBLIC_KEYS": public_env(KEY), "REQUIRE_SECRETS": "1", "VAR_DIR": str(tmp_path)}
    env.pop("MAKEFLAGS", None)

    def make(qr: str) -> subprocess.CompletedProcess:
        # -o: the venv counts as installed; the test needs no pip run.
        return subprocess.run(["make", "-s", "--no-print-directory", "-o", ".venv/.installed", "verify-certificate",
                               f"QR={qr}"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)

    genuine = make(payload)
    assert genuine.returncode == 0, genuine.stderr
    assert "Budi Santoso" in genuine.stdout
    altered = make(payload.replace("$", "%", 1))
    assert altered.returncode != 0 and "DITOLAK" in altered.stderr
    quoted = make("it's not")
    assert quoted.returncode != 0 and "DITOLAK" in quoted.stderr


# --- the page ---------------------------------------------------------------------------------


def test_page_shows_a_form(action_client):
    _, page = action_client.get("/verifikasi")
    assert page.status == 200 and page.headers["content-type"].startswith("text/html")
    assert '<form method="post" action="/verifikasi">' in page.text and 'name="qr"' in page.text
    assert page.headers["cache-control"] == "no-store" and "default-src 'none'" in page.headers["content-security-policy"]


def test_page_shows_the_holder_of_a_genuine_certificate(action_client, backend):
    payload = qr_payload(BUDI, backend.settings.certificate_signing_key)
    _, page = action_client.post("/verifikasi", data={"qr": payload})
    assert page.status == 200 and "<h2>Asli</h2>" in page.text
    for expected in ("Budi Santoso", "15 Januari 1990", "Booster (Dosis 3)", "Comirnaty (Pfizer)", "14 Februari 2022",
                     "SV-202202-000013"):
        assert expected in page.text, expected
    altered = payload[:-1] + ("0" if payload[-1] != "0" else "1")
    _, page = action_client.post("/verifikasi", data={"qr": altered})
    assert "<h2>Ditolak</h2>" in page.text and "Budi Santoso" not in page.text
    _, page = action_client.post("/verifikasi", data={"qr": PAYLOAD})  # the test key is not this server's
    assert "<h2>Ditolak</h2>" in page.text and "tidak dikenal" in page.text


def test_page_escapes_what_it_echoes(action_client, backend):
    hostile = '</textarea><script>alert(1)</script>"\'&'
    _, page = action_client.post("/verifikasi", data={"qr": hostile})
    assert "<script>" not in page.text and "&lt;/textarea&gt;&lt;script&gt;" in page.text
    assert "<h2>Ditolak</h2>" in page.text
    # A claim that is itself markup is shown as text.
    payload = sign(replace(CLAIMS, full_name="<b>Budi</b>"), backend.settings.certificate_signing_key)
    _, page = action_client.post("/verifikasi", data={"qr": payload})
    assert "<h2>Asli</h2>" in page.text and "&lt;b&gt;Budi&lt;/b&gt;" in page.text and "<b>Budi</b>" not in page.text
    _, page = action_client.post("/verifikasi", data={"qr": "  "})
    assert "Tempel teks kode QR terlebih dahulu" in page.text


# --- the PDF ----------------------------------------------------------------------------------


def qr_modules_in_pdf(pdf: bytes) -> set[tuple[int, int]]:
    """The dark modules the PDF draws, from its content stream's filled rectangles (one per run
    of dark modules in a row; the page's other rectangle is the wide header bar)."""
    content = PdfReader(io.BytesIO(pdf)).pages[0].get_contents().get_data().decode("latin-1")
    rects = [tuple(map(float, m)) for m in re.findall(r"([\d.]+) ([\d.]+) ([\d.]+) (-?[\d.]+) re f", content)]
    qr = [(x, y, w) for x, y, w, _ in rects if w < 50 / 25.4 * 72 + 0.1]
    side = min(w for _, _, w in qr)  # a run of one module
    modules = [(round(x / side) + i, round(-y / side)) for x, y, w in qr for i in range(round(w / side))]
    left, top = min(c for c, _ in modules), min(r for _, r in modules)
    return {(c - left, r - top) for c, r in modules}


def dark_modules(payload: str) -> set[tuple[int, int]]:
    matrix = list(segno.make_qr(payload, error="q", mask=QR_MASK).matrix_iter(border=0))
    return {(c, r) for r, row in enumerate(matrix) for c, dark in enumerate(row) if dark}


def test_the_pdf_carries_a_payload_that_verifies(backend, outbox):
    backend.otp.request("c1", "+6281234567001")
    backend.otp.verify("c1", outbox.last_code("+6281234567001"))
    backend.repo.choose_person("c1", backend.repo.people("c1")[0].id)
    _, _, token = backend.repo.create_certificate_link("c1", 3)
    data = backend.repo.certificate_by_token(token)
    payload = qr_payload(data, backend.settings.certificate_signing_key)
    claims = verify(payload, backend.settings.certificate_public_keys)
    assert (claims.full_name, claims.birth_date, claims.dose, claims.vaccine, claims.vaccinated_on,
            claims.certificate_number) == ("Budi Santoso", date(1990, 1, 15), 3, "Comirnaty (Pfizer)",
                                           date(2022, 2, 14), data["certificate_number"])
    assert claims.issued_at == data["issued_at"].replace(microsecond=0)
    pdf = backend.certificates.get_pdf(data)
    assert qr_modules_in_pdf(pdf) == dark_modules(payload)  # the QR drawn is that payload's
    # A corrected name is a new version: a new PDF whose QR carries the new name.
    backend.repo.change_name("c1", "Budi Santoso Putra")
    changed = backend.repo.certificate_by_token(token)
    new_payload = qr_payload(changed, backend.settings.certificate_signing_key)
    assert verify(new_payload, backend.settings.certificate_public_keys).full_name == "Budi Santoso Putra"
    assert qr_modules_in_pdf(backend.certificates.get_pdf(changed)) == dark_modules(new_payload)


def test_the_qr_stays_readable_for_long_names():
    long = replace(CLAIMS, full_name="Ni Luh Putu Ayu Lestari Wulandari Kusumaningrum",
                   vaccine="AstraZeneca (Vaxzevria)")
    qr = segno.make_qr(sign(long, KEY), error="q")
    assert qr.version <= 17  # 89 modules with the border: 0.56 mm each at 50 mm
    assert segno.make_qr(PAYLOAD, error="q").version <= 14


def test_certificate_number_and_dates_survive_time_zones():
    # issued_at from PostgreSQL comes with the server's zone; the claim is the same instant.
    wib = ISSUED.astimezone(timezone(timedelta(hours=7)))
    assert sign(replace(CLAIMS, issued_at=wib), KEY) == PAYLOAD
    assert isinstance(verify(PAYLOAD, [KEY.public_key()]), Claims)


# --- the QR in the PDF --------------------------------------------------------------------------


@pytest.mark.skipif(not (shutil.which("pdftoppm") and shutil.which("zbarimg")),
                    reason="needs poppler-utils and zbar-tools (.ci/run installs them)")
def test_the_qr_printed_in_the_pdf_reads_back_as_the_signed_payload(tmp_path):
    """Rendered as a printer or a screen would (200 dpi) and read by a QR decoder: the text is
    the payload, which verifies. Eight holders of different name lengths and doses."""
    from backend.certificates import build_pdf

    read = 0
    for i, name in enumerate(["Budi Santoso", "Ni Luh Putu Ayu Kartika Dewi Sanjaya", "Siti", "Agus Wijaya",
                              "Muhammad Rizky Pratama Putra", "Rina", "I Gede Made Wirawan", "Yohanes Lie"]):
        data = {**BUDI, "certificate_id": 100 + i, "full_name": name, "dose": 1 + i % 3,
                "certificate_number": f"SV-202202-{i:06d}"}
        (tmp_path / "c.pdf").write_bytes(build_pdf(data, KEY))
        subprocess.run(["pdftoppm", "-r", "200", "-png", "-singlefile", str(tmp_path / "c.pdf"),
                        str(tmp_path / "c")], check=True)
        text = subprocess.run(["zbarimg", "-q", "--raw", str(tmp_path / "c.png")],
                              capture_output=True, text=True).stdout.strip()
        assert text == qr_payload(data, KEY)
        assert verify(text, [KEY.public_key()]).full_name == name
        read += 1
    assert read == 8
