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

from backend import Backend
from backend.identifiers import mask_nik
from backend.officer_desk import Notifier, OfficerDesk, TicketNotFound
from backend.tickets import CATEGORIES, WIB, Tickets


def desk_for(backend: Backend) -> OfficerDesk:
    return OfficerDesk(Tickets(backend.repo), Notifier(backend.db, backend.repo.clock))


def print_open(desk: OfficerDesk) -> None:
    rows = desk.open_tickets()
    if not rows:
        print("Tidak ada tiket terbuka.")
        return
    print(f"{'nomor':16}{'kategori':26}{'status':10}{'dibuat (WIB)':18}{'petugas':10}warga")
    for row in rows:
        who = f"{row['full_name']} (NIK {mask_nik(row['nik'].strip())})" if row["nik"] else "-"
        live = "  [percakapan aktif]" if row["live"] else ""
        print(f"{row['reference']:16}{CATEGORIES.get(row['category'], row['category']):26}{row['status']:10}"
              f"{row['created_at'].astimezone(WIB):%Y-%m-%d %H:%M}  {row['assigned_to'] or '-':10}{who}{live}")


def print_ticket(desk: OfficerDesk, reference: str) -> None:
    t = desk.show(reference)
    print(f"{t['reference']}  {CATEGORIES.get(t['category'], t['category'])}  status: {t['status']}"
          f"  petugas: {t['assigned_to'] or '-'}  kanal: {t['channel'] or '-'}")
    if t.get("citizen"):
        print(f"warga: {t['citizen']['full_name']} (NIK {mask_nik(t['citizen']['nik'].strip())})")
    print(f"dibuat: {t['created_at'].astimezone(WIB):%Y-%m-%d %H:%M} WIB")
    print(f"uraian: {t['description']}")
    if t["live"]:
        print("percakapan sedang ditangani petugas: balas dengan `reply`, kembalikan ke bot dengan `release`")
    for note in t["notes"]:
        shown = " (terlihat warga)" if note["public"] else ""
        print(f"  {note['at'].astimezone(WIB):%H:%M} {note['author']}{shown}: {note['note']}")


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
            print(f"{args.reference} diambil oleh {args.officer}")
        elif args.command == "note":
            desk.note(args.reference, args.officer, args.text, public=args.public)
            print("catatan disimpan")
        else:
            how = getattr(desk, args.command)(*([args.reference, args.officer, args.text] if args.text
                                                else [args.reference, args.officer]))
            told = {"whatsapp": "dikirim lewat WhatsApp", "whatsapp_template": "dikirim lewat template WhatsApp",
                    "stored": "ditampilkan di chat warga pada pesan berikutnya"}.get(how, "warga tidak dapat diberi tahu")
            print(f"{args.reference}: {args.command} selesai; pemberitahuan {told}")
    except TicketNotFound:
        print(f"tiket {args.reference} tidak ditemukan", file=sys.stderr)
        return 1
    except ValueError as exc:
        print(str(exc), file=sys.stderr)
        return 1
    finally:
        backend.db.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
