"""Rasa's bot messages as Graph API payloads, checked against the fake's copy of Meta's limits.

Text splitting, reply buttons, lists, numbered text, the certificate's data, the OTP template.
"""

from __future__ import annotations

from hypothesis import given, settings, strategies as st

from whatsapp import outbound, texts
from simulator.fake_graph import problem_with

TO = "6281234567002"
MENU = [{"title": "Download Sertifikat", "payload": "/download_certificate"},
        {"title": "Status Vaksinasi", "payload": "/check_vaccination_status"},
        {"title": "Ubah Info Diri", "payload": "/change_personal_info"}]


def valid(payloads: list[dict]) -> list[dict]:
    for p in payloads:
        assert problem_with(p, {}) is None, (problem_with(p, {}), p)
    return payloads


def test_short_text_is_one_message_without_link_preview():
    [message] = valid(outbound.text_messages(TO, "Halo! 👋"))
    assert message == {"messaging_product": "whatsapp", "recipient_type": "individual", "to": TO,
                       "type": "text", "text": {"preview_url": False, "body": "Halo! 👋"}}


def test_long_text_is_split_at_boundaries_under_4096():
    paragraph = ("Kalimat yang cukup panjang untuk mengisi pesan. " * 30).strip()
    text = "\n\n".join([paragraph] * 8)  # 8 x 1,439 characters: two paragraphs fit in 4096
    pieces = valid(outbound.text_messages(TO, text))
    bodies = [p["text"]["body"] for p in pieces]
    assert len(bodies) == 4 and all(len(b) <= 4096 for b in bodies)
    assert all(b.endswith(".") for b in bodies)  # cut between paragraphs, not inside a word
    assert " ".join(" ".join(bodies).split()) == " ".join(text.split())


@settings(max_examples=200, deadline=None)
@given(st.text(min_size=1, max_size=12000))
def test_any_text_splits_into_valid_pieces_that_keep_every_character(text):
    pieces = outbound.split_text(text)
    assert all(0 < len(p) <= 4096 for p in pieces)
    assert "".join("".join(p.split()) for p in pieces) == "".join(text.split())


def test_up_to_three_buttons_are_reply_buttons_with_the_payload_as_id():
    [message] = valid(outbound.button_messages(TO, "Pilih menu:", MENU))
    interactive = message["interactive"]
    assert interactive["type"] == "button" and interactive["body"] == {"text": "Pilih menu:"}
    assert [b["reply"] for b in interactive["action"]["buttons"]] == [
        {"id": "/download_certificate", "title": "Download Sertifikat"},
        {"id": "/check_vaccination_status", "title": "Status Vaksinasi"},
        {"id": "/change_personal_info", "title": "Ubah Info Diri"}]


def test_button_titles_are_cut_to_20_characters():
    buttons = [{"title": "Download sertifikat vaksin", "payload": "/download_certificate"},
               {"title": "Bukan semuanya", "payload": "/out_of_scope"}]
    [message] = valid(outbound.button_messages(TO, "Maksud Anda:", buttons))
    titles = [b["reply"]["title"] for b in message["interactive"]["action"]["buttons"]]
    assert titles == ["Download sertifikat…", "Bukan semuanya"] and all(len(t) <= 20 for t in titles)


def test_four_to_ten_buttons_are_a_list_with_cut_titles_and_descriptions():
    buttons = [{"title": "Nama", "payload": "nama"}, {"title": "Nomor HP", "payload": "nomor hp"},
               {"title": "Email", "payload": "email"}, {"title": "NIK", "payload": "nik"},
               {"title": "Tanggal lahir sesuai KTP dan akta kelahiran", "payload": "tanggal lahir"}]
    [message] = valid(outbound.button_messages(TO, "Data apa yang ingin diubah?", buttons))
    interactive = message["interactive"]
    assert interactive["type"] == "list" and interactive["action"]["button"] == texts.LIST_BUTTON
    rows = interactive["action"]["sections"][0]["rows"]
    assert [r["id"] for r in rows] == ["nama", "nomor hp", "email", "nik", "tanggal lahir"]
    assert rows[0] == {"id": "nama", "title": "Nama"}
    assert rows[4]["title"] == "Tanggal lahir sesuai KT…" and len(rows[4]["title"]) == 24
    assert rows[4]["description"] == "Tanggal lahir sesuai KTP dan akta kelahiran"

    ten = [{"title": f"Pilihan {i}", "payload": f"/p{i}"} for i in range(10)]
    [message] = valid(outbound.button_messages(TO, "Pilih:", ten))
    assert len(message["interactive"]["action"]["sections"][0]["rows"]) == 10
    long_description = [{"title": f"{i} " + "x" * 100, "payload": str(i)} for i in range(4)]
    [message] = valid(outbound.button_messages(TO, "Pilih:", long_description))
    assert all(len(r["description"]) <= 72 for r in message["interactive"]["action"]["sections"][0]["rows"])


def test_more_than_ten_buttons_become_numbered_text():
    eleven = [{"title": f"Pilihan {i}", "payload": f"/p{i}"} for i in range(1, 12)]
    [message] = valid(outbound.button_messages(TO, "Pilih salah satu:", eleven))
    body = message["text"]["body"]
    assert message["type"] == "text" and "1. Pilihan 1" in body and "11. Pilihan 11" in body
    assert body.endswith(texts.TYPE_YOUR_CHOICE)


def test_titles_that_collide_once_cut_fall_back_to_numbered_text():
    twins = [{"title": "Sertifikat vaksin dosis 1", "payload": "1"},
             {"title": "Sertifikat vaksin dosis 2", "payload": "2"}]
    [message] = valid(outbound.button_messages(TO, "Pilih:", twins))
    assert message["type"] == "text" and "2. Sertifikat vaksin dosis 2" in message["text"]["body"]


def test_a_body_too_long_for_an_interactive_message_goes_first_as_text():
    long_text = "Status vaksinasi:\n" + "• Dosis 1: AstraZeneca, RS Hasan Sadikin Bandung\n" * 40
    messages = valid(outbound.button_messages(TO, long_text, MENU))
    assert [m["type"] for m in messages] == ["text", "interactive"]
    assert messages[1]["interactive"]["body"]["text"] == texts.CHOOSE_ONE


def test_buttons_without_payload_or_text_still_make_a_valid_message():
    [message] = valid(outbound.button_messages(TO, "", [{"title": "Ya"}, {"title": "Tidak"}]))
    assert message["interactive"]["body"]["text"] == texts.CHOOSE_ONE
    assert [b["reply"]["id"] for b in message["interactive"]["action"]["buttons"]] == ["Ya", "Tidak"]
    assert outbound.button_messages(TO, "", [{"junk": 1}, "x"]) == []


TOKEN = "Zk3v9Qp2LmN8xY4rT6wB_-aQ7s0dF1gH2jK3lM4nP5q"  # 43 characters, as token_urlsafe(32)


def test_certificate_part_comes_from_the_data_only():
    part = {"token": TOKEN, "filename": "sertifikat-vaksin-dosis-2.pdf",
            "caption": "Sertifikat Dosis 2 atas nama Siti Rahmawati (NIK 3273********0003)"}
    certificate = outbound.certificate_part({"text": "whatever", "custom": {"certificate": part}})
    assert certificate == outbound.Certificate(TOKEN, "sertifikat-vaksin-dosis-2.pdf", part["caption"])
    # A link in the text is text: nothing to fetch.
    link = f"http://127.0.0.1:9/certificates/{TOKEN}.pdf"
    assert outbound.certificate_part({"text": f"Sertifikat siap diunduh:\n{link}"}) is None
    # A token of another alphabet or length, or not a string, names no certificate.
    for token in (TOKEN[:-1], TOKEN + "a", TOKEN[:-1] + "/", "../../x", "", None, 42):
        assert outbound.certificate_part({"custom": {"certificate": {**part, "token": token}}}) is None
    # A file name that is not a plain .pdf name, or no caption: the defaults.
    odd = outbound.certificate_part({"custom": {"certificate": {"token": TOKEN, "filename": "../x.exe"}}})
    assert (odd.filename, odd.caption) == ("sertifikat-vaksin.pdf", texts.CERTIFICATE_CAPTION)


def test_otp_template_carries_the_code_in_body_and_copy_code_button():
    message = outbound.otp_template_message(TO, "kode_verifikasi", "id", "482913")
    assert problem_with(message, {}) is None
    template = message["template"]
    assert template["name"] == "kode_verifikasi" and template["language"] == {"code": "id"}
    assert template["components"] == [
        {"type": "body", "parameters": [{"type": "text", "text": "482913"}]},
        {"type": "button", "sub_type": "url", "index": "0", "parameters": [{"type": "text", "text": "482913"}]}]


def test_certificate_fetched_from_the_action_servers_own_base():
    from whatsapp.settings import WhatsAppSettings

    settings = WhatsAppSettings.from_env({"PUBLIC_BASE_URL": "https://vaksin.example.go.id",
                                          "CERTIFICATE_INTERNAL_BASE_URL": "http://actions:5055"})
    assert settings.certificate_url(TOKEN) == f"http://actions:5055/certificates/{TOKEN}.pdf"
    public = WhatsAppSettings.from_env({"PUBLIC_BASE_URL": "https://vaksin.example.go.id/"})
    assert public.certificate_url(TOKEN) == f"https://vaksin.example.go.id/certificates/{TOKEN}.pdf"
    assert WhatsAppSettings.from_env({}).certificate_url(TOKEN) == \
        f"http://localhost:5055/certificates/{TOKEN}.pdf"
