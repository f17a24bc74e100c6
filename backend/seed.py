"""The demo citizens of shared/product.md, seeded idempotently into every fresh database.

Tests and demos rely on these records: add people, do not change them.
"""

from __future__ import annotations

from datetime import date

from .db import Database

# (phone, [(nik, name, birth date, [(dose, vaccine, date, facility, certificate issued?)])])
DEMO_ACCOUNTS = [
    ("+6281234567001", [
        ("3174011501900001", "Budi Santoso", date(1990, 1, 15), [
            (1, "CoronaVac", date(2021, 7, 5), "Puskesmas Kebayoran Baru", True),
            (2, "CoronaVac", date(2021, 8, 2), "Puskesmas Kebayoran Baru", True),
            (3, "Comirnaty (Pfizer)", date(2022, 2, 14), "RSUD Pasar Minggu", True),
        ]),
        ("3174014203100002", "Rina Santoso", date(2010, 3, 2), [
            (1, "CoronaVac", date(2021, 12, 20), "Puskesmas Kebayoran Baru", True),
            (2, "CoronaVac", date(2022, 1, 17), "Puskesmas Kebayoran Baru", True),
        ]),
    ]),
    ("+6281234567002", [
        ("3273025708850003", "Siti Rahmawati", date(1985, 8, 17), [
            (1, "AstraZeneca (Vaxzevria)", date(2021, 6, 10), "RS Hasan Sadikin Bandung", True),
            (2, "AstraZeneca (Vaxzevria)", date(2021, 9, 2), "RS Hasan Sadikin Bandung", True),
        ]),
    ]),
    ("+6281234567003", [
        # The name is misspelt on record on purpose: the demo of a name correction.
        ("3578030101000004", "Agus Wijya", date(2000, 1, 1), [
            (1, "Moderna (Spikevax)", date(2021, 10, 11), "Puskesmas Tegalsari Surabaya", True),
        ]),
    ]),
    ("+6281234567004", [
        ("5171014404950005", "Ni Luh Putu Ayu Lestari", date(1995, 4, 4), []),
    ]),
    ("+6281234567005", [
        ("3201016512920006", "Dewi Lestari", date(1992, 12, 25), [
            (1, "Sinopharm", date(2022, 3, 1), "Puskesmas Cibinong", True),
            (2, "Sinopharm", date(2022, 3, 29), "Puskesmas Cibinong", False),
        ]),
    ]),
    # Added after product.md's table: Ni Luh Putu Ayu Lestari registered a second time, under
    # another number and a mistyped NIK, when she was vaccinated. Her own account shows no
    # vaccination: the demo of "certificate issued under another account".
    ("+6281234567006", [
        ("5171014404950050", "Ni Luh Putu Ayu Lestari", date(1995, 4, 4), [
            (1, "Comirnaty (Pfizer)", date(2022, 1, 10), "RSUP Sanglah Denpasar", True),
        ]),
    ]),
]


def certificate_number(nik: str, dose: int, vaccinated_on: date) -> str:
    """A stable demo certificate number; it carries no part of the NIK."""
    serial = (int(nik[-4:]) * 10 + dose)
    return f"SV-{vaccinated_on:%Y%m}-{serial:06d}"


def seed_demo(db: Database) -> None:
    def seed(cur) -> None:
        for phone, people in DEMO_ACCOUNTS:
            cur.execute(
                "INSERT INTO accounts (phone) VALUES (%s) ON CONFLICT (phone) DO NOTHING", (phone,)
            )
            cur.execute("SELECT id FROM accounts WHERE phone = %s", (phone,))
            account_id = cur.fetchone()["id"]
            for nik, name, born, doses in people:
                cur.execute(
                    "INSERT INTO citizens (account_id, nik, full_name, birth_date)"
                    " VALUES (%s, %s, %s, %s) ON CONFLICT (nik) DO NOTHING",
                    (account_id, nik, name, born),
                )
                cur.execute("SELECT id FROM citizens WHERE nik = %s", (nik,))
                citizen_id = cur.fetchone()["id"]
                for dose, vaccine, on, facility, issued in doses:
                    cur.execute(
                        "INSERT INTO vaccinations (citizen_id, dose, vaccine, vaccinated_on, facility)"
                        " VALUES (%s, %s, %s, %s, %s) ON CONFLICT (citizen_id, dose) DO NOTHING",
                        (citizen_id, dose, vaccine, on, facility),
                    )
                    if issued:
                        cur.execute(
                            "INSERT INTO certificates (vaccination_id, certificate_number, issued_at)"
                            " SELECT id, %s, vaccinated_on + interval '1 day' FROM vaccinations"
                            " WHERE citizen_id = %s AND dose = %s"
                            " ON CONFLICT (vaccination_id) DO NOTHING",
                            (certificate_number(nik, dose, on), citizen_id, dose),
                        )

    db.run(seed)


BENCH_PHONE_PREFIX = "+62813990"  # +62813990000001 ...: synthetic numbers, benchmark only


def bench_phone(i: int) -> str:
    return f"{BENCH_PHONE_PREFIX}{i:06d}"


def seed_bench(db: Database, count: int) -> None:
    """Synthetic citizens for load tests (never seeded otherwise): one person per account,
    two doses with certificates, so every flow (status, download, change of e-mail) works."""

    def seed(cur) -> None:
        for i in range(1, count + 1):
            phone = bench_phone(i)
            # A NIK python-stdnum accepts (Jakarta Selatan, born 15-01-1990), in districts
            # 20-29, which the demo citizens do not use.
            nik = f"3174{20 + i // 10000:02d}150190{i % 10000:04d}"
            cur.execute("INSERT INTO accounts (phone) VALUES (%s) ON CONFLICT (phone) DO NOTHING RETURNING id",
                        (phone,))
            row = cur.fetchone()
            if row is None:
                continue  # seeded before
            cur.execute("INSERT INTO citizens (account_id, nik, full_name, birth_date) VALUES (%s, %s, %s, %s)"
                        " ON CONFLICT (nik) DO NOTHING RETURNING id",
                        (row["id"], nik, f"Warga Uji {i}", date(1990, 1, 15)))
            person = cur.fetchone()
            if person is None:
                continue
            for dose, on in ((1, date(2021, 7, 5)), (2, date(2021, 8, 2))):
                cur.execute("INSERT INTO vaccinations (citizen_id, dose, vaccine, vaccinated_on, facility)"
                            " VALUES (%s, %s, 'CoronaVac', %s, 'Puskesmas Uji') RETURNING id",
                            (person["id"], dose, on))
                cur.execute("INSERT INTO certificates (vaccination_id, certificate_number) VALUES (%s, %s)",
                            (cur.fetchone()["id"], f"UJI-{i:06d}-{dose}"))

    db.run(seed)
