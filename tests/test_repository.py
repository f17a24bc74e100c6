"""The data layer against the real PostgreSQL: sessions decide who sees what; changes are whole."""

import io

import pytest
from pypdf import PdfReader

from backend.db import migrate
from backend.repository import ChangeRejected, NotVerified, PersonNotChosen
from backend.seed import seed_demo


def login(backend, outbox, conversation, phone):
    backend.otp.request(conversation, phone)
    assert backend.otp.verify(conversation, outbox.last_code(phone)).status == "ok"


def count(backend, sql, *args):
    return backend.db.run(lambda cur: (cur.execute(sql, args), cur.fetchone())[1])["n"]


def test_migrations_and_seed_are_idempotent(backend):
    assert migrate(backend.db) == []
    seed_demo(backend.db)
    assert count(backend, "SELECT count(*) AS n FROM citizens") == 7
    assert count(backend, "SELECT count(*) AS n FROM vaccinations") == 11
    assert count(backend, "SELECT count(*) AS n FROM certificates") == 10


def test_nothing_without_a_verified_session(backend):
    with pytest.raises(NotVerified):
        backend.repo.vaccination_record("stranger")
    with pytest.raises(NotVerified):
        backend.repo.people("stranger")
    with pytest.raises(NotVerified):
        backend.repo.create_certificate_link("stranger", 1)
    with pytest.raises(NotVerified):
        backend.repo.change_name("stranger", "Siapa Saja")


def test_family_account_chooses_a_person(backend, outbox):
    login(backend, outbox, "c1", "+6281234567001")
    assert [p.full_name for p in backend.repo.people("c1")] == ["Budi Santoso", "Rina Santoso"]
    with pytest.raises(PersonNotChosen):
        backend.repo.vaccination_record("c1")
    rina = backend.repo.people("c1")[1]
    backend.repo.choose_person("c1", rina.id)
    person, doses = backend.repo.vaccination_record("c1")
    assert person.full_name == "Rina Santoso" and person.masked_nik == "3174********0002"
    assert [d.dose for d in doses] == [1, 2]


def test_a_person_of_another_account_cannot_be_chosen(backend, outbox):
    login(backend, outbox, "c1", "+6281234567001")
    siti_id = count(backend, "SELECT id AS n FROM citizens WHERE nik = '3273025708850003'")
    with pytest.raises(NotVerified):
        backend.repo.choose_person("c1", siti_id)


def test_session_lasts_15_minutes_and_ends_on_request(backend, outbox, clock):
    login(backend, outbox, "c1", "+6281234567002")
    assert backend.repo.session_state("c1") == "ready"
    clock.advance(899)
    assert backend.repo.session_state("c1") == "ready"
    clock.advance(1)
    assert backend.repo.session_state("c1") == "none"
    login(backend, outbox, "c2", "+6281234567002")
    assert backend.repo.end_session("c2") is True
    assert backend.repo.session_state("c2") == "none"


def test_certificate_link_serves_only_until_it_expires(backend, outbox, clock):
    login(backend, outbox, "c1", "+6281234567002")
    person, dose, token = backend.repo.create_certificate_link("c1", 2)
    assert len(token) >= 40
    data = backend.repo.certificate_by_token(token)
    assert (data["full_name"], data["dose"], data["vaccine"]) == ("Siti Rahmawati", 2, "AstraZeneca (Vaxzevria)")
    assert backend.repo.certificate_by_token(token[:-1] + ("A" if token[-1] != "A" else "B")) is None
    assert backend.repo.certificate_by_token("") is None
    clock.advance(900)
    assert backend.repo.certificate_by_token(token) is None
    audit = backend.db.run(lambda cur: (cur.execute("SELECT * FROM audit_log"), cur.fetchall())[1])
    assert [(a["action"], a["actor"], a["conversation_id"]) for a in audit] == [
        ("certificate_download", "NIK 3273********0003", "c1")]


def test_no_link_for_a_dose_not_recorded_or_not_issued(backend, outbox):
    login(backend, outbox, "c1", "+6281234567005")  # Dewi: dose 2 still being processed
    with pytest.raises(LookupError, match="not_issued"):
        backend.repo.create_certificate_link("c1", 2)
    with pytest.raises(LookupError, match="not_recorded"):
        backend.repo.create_certificate_link("c1", 3)


def test_name_change_is_audited_and_bumps_the_version(backend, outbox):
    login(backend, outbox, "c1", "+6281234567003")
    before = backend.repo.current_person("c1")
    after = backend.repo.change_name("c1", "Agus Wijaya")
    assert (before.full_name, after.full_name) == ("Agus Wijya", "Agus Wijaya")
    assert after.version == before.version + 1
    audit = backend.db.run(lambda cur: (cur.execute("SELECT action, detail FROM audit_log"), cur.fetchall())[1])
    assert [(a["action"], a["detail"]) for a in audit] == [
        ("change_name", {"old": "Agus Wijya", "new": "Agus Wijaya"})]


def test_phone_change_refuses_another_accounts_number(backend, outbox):
    login(backend, outbox, "c1", "+6281234567004")
    with pytest.raises(ChangeRejected):
        backend.db.run(backend.repo.change_phone, "c1", "+6281234567002")


def test_correction_request_gets_a_reference(backend, outbox, clock):
    login(backend, outbox, "c1", "+6281234567004")
    person, reference = backend.repo.open_correction_request("c1", "nik")
    assert reference == "PL-2026-000001"
    _, second = backend.repo.open_correction_request("c1", "birth_date")
    assert second == "PL-2026-000002"
    tickets = backend.db.run(lambda cur: (cur.execute(
        "SELECT reference, category, status FROM tickets ORDER BY id"), cur.fetchall())[1])
    assert [tuple(t.values()) for t in tickets] == [
        ("PL-2026-000001", "correction_nik", "diterima"),
        ("PL-2026-000002", "correction_birth_date", "diterima")]


def test_certificate_pdf_content(backend, outbox):
    login(backend, outbox, "c1", "+6281234567001")
    backend.repo.choose_person("c1", backend.repo.people("c1")[0].id)
    _, _, token = backend.repo.create_certificate_link("c1", 3)
    data = backend.repo.certificate_by_token(token)
    pdf = backend.certificates.get_pdf(data)
    assert pdf.startswith(b"%PDF")
    text = PdfReader(io.BytesIO(pdf)).pages[0].extract_text()
    for expected in ["SERTIFIKAT VAKSINASI COVID-19", "Budi Santoso", "3174********0001",
                     "15 Januari 1990", "Booster (Dosis 3)", "Comirnaty (Pfizer)", "14 Februari 2022",
                     "RSUD Pasar Minggu", data["certificate_number"]]:
        assert expected in text, expected
    assert "3174011501900001" not in text
    assert backend.certificates.get_pdf(data) is pdf  # cached
    backend.repo.change_name("c1", "Budi Santoso Putra")
    changed = backend.repo.certificate_by_token(token)
    assert "Budi Santoso Putra" in PdfReader(io.BytesIO(backend.certificates.get_pdf(changed))).pages[0].extract_text()
