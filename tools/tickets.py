"""The officers' command line for tickets (`make tickets`; docs/tickets.md).

    python -m tools.tickets                          # open tickets, oldest first
    python -m tools.tickets show PL-2026-000001      # details, notes, the chat of a handoff
    python -m tools.tickets take PL-2026-000001 --officer rina
    python -m tools.tickets note PL-2026-000001 "telepon faskes" [--public] --officer rina
    python -m tools.tickets resolve PL-2026-000001 "sertifikat sudah terbit" --officer rina
    python -m tools.tickets reject PL-2026-000001 "data tidak ditemukan" --officer rina
    python -m tools.tickets reply PL-2026-000002 "Halo, saya Rina, ada yang bisa dibantu?"
    python -m tools.tickets release PL-2026-000002  # "selesai": the bot answers again

Resolving, rejecting and replying tell the citizen in their chat. Uses the same database as
`make run` (DATABASE_URL, or the embedded one under var/).
"""

from __future__ import annotations

import argparse
import getpass
import os
import sys
from pathlib import Path

from actions import wording
from backend import Backend
from backend.identifiers import mask_nik
from backend.officer_desk import Notifier, OfficerDesk, TicketNotFound
from backend.staff_text import for_staff
from backend.tickets import WIB, Tickets


def tell_on_whatsapp(wa_id: str, text: str, window_open: bool) -> None:
    from whatsapp.notify import send_notification  # only when a WhatsApp citizen is told

    send_notification(wa_id, text, window_open)


def desk_for(backend: Backend) -> OfficerDesk:
    """The desk assembled: domain.yml's words, and WhatsApp citizens told through the channel."""
    return OfficerDesk(Tickets(backend.repo, wording.domain()),
                       Notifier(backend.db, backend.repo.clock, tell_on_whatsapp))


def print_open(desk: OfficerDesk) -> None:
    rows = desk.open_tickets()
    if not rows:
        print("Tidak ada tiket terbuka.")
        return
    label = desk.tickets.label
    print(f"{'nomor':16}{'kategori':26}{'status':10}{'dibuat (WIB)':18}{'petugas':10}warga")
    for row in rows:
        # Names and texts in the database may come from citizens: for_staff() shows their
        # control characters instead of letting them act on this terminal.
        who = (f"{for_staff(row['full_name'])} (NIK {for_staff(mask_nik(row['nik'].strip()))})"
               if row["nik"] else "-")
        live = "  [percakapan aktif]" if row["live"] else ""
        print(f"{for_staff(row['reference']):16}{for_staff(label(row['category'])):26}{for_staff(row['status']):10}"
              f"{row['created_at'].astimezone(WIB):%Y-%m-%d %H:%M}  {for_staff(row['assigned_to'] or '-'):10}{who}{live}")


def print_ticket(desk: OfficerDesk, reference: str) -> None:
    t = desk.show(reference)
    print(f"{for_staff(t['reference'])}  {for_staff(desk.tickets.label(t['category']))}  status: {for_staff(t['status'])}"
          f"  petugas: {for_staff(t['assigned_to'] or '-')}  kanal: {for_staff(t['channel'] or '-')}")
    if t.get("citizen"):
        print(f"warga: {for_staff(t['citizen']['full_name'])} (NIK {for_staff(mask_nik(t['citizen']['nik'].strip()))})")
    print(f"dibuat: {t['created_at'].astimezone(WIB):%Y-%m-%d %H:%M} WIB")
    # A description or a message may have several lines: kept, each indented under its label.
    print(f"uraian: {for_staff(t['description'], keep_lines=True, indent=' ' * 8)}")
    if t["live"]:
        print("percakapan sedang ditangani petugas: balas dengan `reply`, kembalikan ke bot dengan `release`")
    for note in t["notes"]:
        shown = " (terlihat warga)" if note["public"] else ""
        head = f"  {note['at'].astimezone(WIB):%H:%M} {for_staff(note['author'])}{shown}: "
        print(head + for_staff(note["note"], keep_lines=True, indent=" " * len(head)))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", nargs="?", default="list",
                        choices=["list", "show", "take", "note", "resolve", "reject", "reply", "release"])
    parser.add_argument("reference", nargs="?")
    parser.add_argument("text", nargs="?")
    parser.add_argument("--officer", default=os.environ.get("OFFICER") or getpass.getuser())
    parser.add_argument("--public", action="store_true", help="a note the citizen sees")
    args = parser.parse_args(argv)
    if args.command != "list" and not args.reference:
        parser.error(f"{args.command} needs a ticket number (PL-...)")
    if args.command in ("note", "resolve", "reject", "reply") and not args.text:
        parser.error(f"{args.command} needs a text")

    from tools.stack import database_url

    from backend.settings import PROJECT_ROOT

    backend = Backend.create(dsn=database_url(Path(os.environ.get("VAR_DIR") or PROJECT_ROOT / "var")))
    backend.prepare()
    desk = desk_for(backend)
    try:
        if args.command == "list":
            print_open(desk)
        elif args.command == "show":
            print_ticket(desk, args.reference)
        elif args.command == "take":
            desk.take(args.reference, args.officer)
            print(f"{for_staff(args.reference)} diambil oleh {for_staff(args.officer)}")
        elif args.command == "note":
            desk.note(args.reference, args.officer, args.text, public=args.public)
            print("catatan disimpan")
        else:
            how = getattr(desk, args.command)(*([args.reference, args.officer, args.text] if args.text
                                                else [args.reference, args.officer]))
            told = {"whatsapp": "dikirim lewat WhatsApp", "whatsapp_template": "dikirim lewat template WhatsApp",
                    "stored": "ditampilkan di chat warga pada pesan berikutnya"}.get(how, "warga tidak dapat diberi tahu")
            print(f"{for_staff(args.reference)}: {args.command} selesai; pemberitahuan {told}")
    except TicketNotFound:
        print(f"tiket {for_staff(args.reference)} tidak ditemukan", file=sys.stderr)
        return 1
    except ValueError as exc:
        print(for_staff(str(exc)), file=sys.stderr)
        return 1
    finally:
        backend.db.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
