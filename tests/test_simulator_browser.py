"""The simulator in a real browser: headless Chromium (Debian's) drives the page against the real stack.

What `make simulator` starts (simulator.run.launch: the simulator, the action server, Rasa with
its WhatsApp channel pointed at the simulator) is started once for this module, on free ports.
A citizen greets, taps "Download Sertifikat", takes the code from the development outbox
panel, picks Budi and his booster, and opens the PDF of the document bubble; then a list
message is answered with the keyboard, and a new conversation asks for verification again.
Screenshots go to results/simulator*.png.
"""

from __future__ import annotations

import io
import re
from pathlib import Path

import pytest
import requests
from pypdf import PdfReader

from simulator.run import launch
from tools.stack import MODEL, ROOT
from whatsapp_support import free_port

pytestmark = pytest.mark.skipif(not MODEL.exists(), reason="no trained model: run `make train`")

CHROMIUM = Path("/usr/bin/chromium")
# Root in a container: no sandbox; and nothing that would reach beyond loopback.
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
REPLY_TIMEOUT_MS = 30_000  # a turn is well under a second; the machine may be busy with other jobs
RESULTS = ROOT / "results"


@pytest.fixture(scope="module")
def running(database_url, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("simulator")
    try:
        started = launch(database_url, port=free_port(), rasa_port=free_port(), action_port=free_port(),
                         log_dir=tmp / "log",
                         extra_env={"VAR_DIR": str(tmp), "OTP_OUTBOX": str(tmp / "outbox.jsonl"),
                                    "OTP_HASH_KEY": "simulator-test-key", "LOG_LEVEL": "INFO"})
    except Exception:
        for log in sorted((tmp / "log").glob("*.log")):
            print(f"--- {log.name}\n{log.read_text()[-4000:]}")
        raise
    yield started
    started.stop()


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    if not CHROMIUM.exists():
        pytest.fail("Chromium is missing: apt-get install chromium chromium-driver (.ci/run does)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        # A fresh profile each run; Playwright is told which browser to use and never fetches one.
        context = playwright.chromium.launch_persistent_context(
            str(tmp_path_factory.mktemp("chromium-profile")), executable_path=str(CHROMIUM), headless=True,
            args=CHROMIUM_ARGS, viewport={"width": 1280, "height": 860}, locale="id-ID",
            timezone_id="Asia/Jakarta")
        yield context
        context.close()


def test_download_the_booster_certificate_in_the_browser(running, browser, backend):  # `backend` resets the data
    from playwright.sync_api import expect

    expect.set_options(timeout=REPLY_TIMEOUT_MS)
    page = browser.new_page()
    problems: list[str] = []
    page.on("pageerror", lambda error: problems.append(str(error)))
    page.goto(running.url)
    chat = page.locator("#messages")
    composer = page.get_by_role("textbox", name="Pesan")

    def last_reply():
        return chat.locator(".row-out").last

    # Who am I: Budi's family number, among the demo citizens offered.
    page.get_by_role("button", name="Budi Santoso, Rina Santoso, 0812-3456-7001").click()
    expect(page.locator("#chat-status")).to_contain_text("0812-3456-7001")
    expect(composer).to_be_focused()

    composer.fill("halo")
    composer.press("Enter")
    expect(chat.locator(".row-in").last).to_contain_text("halo")
    expect(last_reply()).to_contain_text("Asisten Sertifikat Vaksin")
    expect(last_reply().locator(".latency")).to_contain_text(re.compile(r"^\d+,\d\d dtk$"))

    chat.get_by_role("button", name="Download Sertifikat").click()
    expect(last_reply()).to_contain_text("nomor HP")
    chat.get_by_role("button", name="Pakai nomor WA ini").last.click()
    expect(last_reply()).to_contain_text("kode OTP")

    # The code, read where a designer reads it: the development outbox panel.
    outbox = page.locator("#outbox")
    expect(outbox.get_by_role("heading", name="Kotak keluar pengembangan")).to_be_visible()
    code = outbox.locator(".outbox-item.latest .otp-code")
    expect(code).to_have_text(re.compile(r"^\d{6}$"))
    composer.fill(code.inner_text())
    composer.press("Enter")
    expect(chat).to_contain_text("Verifikasi berhasil")

    expect(last_reply()).to_contain_text("Untuk siapa?")
    chat.get_by_role("button", name="Budi Santoso").last.click()
    expect(last_reply()).to_contain_text("Sertifikat mana")
    chat.get_by_role("button", name="Booster").last.click()

    document = chat.locator("a.document").last
    expect(document).to_contain_text("sertifikat-vaksin-dosis-3.pdf")
    expect(document).to_contain_text("Buka")
    expect(document.locator("xpath=..")).to_contain_text("Budi Santoso")
    page.wait_for_timeout(300)  # let the smooth scroll settle for the picture
    document.scroll_into_view_if_needed()  # the picture must show the document bubble
    page.wait_for_timeout(200)
    RESULTS.mkdir(exist_ok=True)
    page.screenshot(path=str(RESULTS / "simulator.png"))

    pdf = requests.get(requests.compat.urljoin(running.url, document.get_attribute("href")), timeout=10)
    assert pdf.status_code == 200 and pdf.headers["Content-Type"] == "application/pdf"
    text = PdfReader(io.BytesIO(pdf.content)).pages[0].extract_text()
    assert "Budi Santoso" in text and "Comirnaty" in text and "3174********0001" in text

    # A list message, answered with the keyboard only: arrows pick a row, Tab and Enter send it.
    composer.fill("ubah data diri")
    composer.press("Enter")
    expect(last_reply()).to_contain_text("Data apa yang ingin diubah?")  # still verified, still Budi
    open_list = chat.get_by_role("button", name="Lihat pilihan").last
    expect(open_list).to_be_visible()
    open_list.focus()
    page.keyboard.press("Enter")
    dialog = page.get_by_role("dialog")
    expect(dialog.get_by_role("radio")).to_have_count(5)
    expect(dialog.get_by_role("radio").first).to_be_focused()
    page.keyboard.press("ArrowDown")
    page.keyboard.press("ArrowDown")
    expect(dialog.get_by_role("radio", name="Email")).to_be_checked()
    page.keyboard.press("Tab")
    expect(dialog.get_by_role("button", name="Kirim")).to_be_focused()
    page.keyboard.press("Enter")
    expect(chat.locator(".row-in").last).to_contain_text("Email")
    expect(last_reply()).to_contain_text("email")

    # On a phone-sized screen the outbox is a drawer behind a button.
    page.set_viewport_size({"width": 390, "height": 844})
    expect(outbox).not_to_be_in_viewport()
    page.get_by_role("button", name="OTP").click()
    expect(outbox).to_be_in_viewport()
    page.wait_for_timeout(300)  # the drawer slides in
    page.screenshot(path=str(RESULTS / "simulator-phone-outbox.png"))
    page.keyboard.press("Escape")
    expect(outbox).not_to_be_in_viewport()

    # A new conversation: the chat is cleared and verification is asked for again.
    page.get_by_role("button", name="Percakapan baru").click()
    expect(chat).to_contain_text("Percakapan baru dimulai")
    expect(chat.locator(".row-in")).to_have_count(0)
    composer.fill("status vaksin")
    composer.press("Enter")
    expect(last_reply()).to_contain_text("nomor HP")
    page.screenshot(path=str(RESULTS / "simulator-phone.png"))
    assert problems == []
    page.close()

