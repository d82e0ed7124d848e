"""Regenerate the demo inputs in events/ (deterministic): `python devtools/make_sample_events.py`.

sample-recipients.csv: 2,500 rows, an Excel-style export (UTF-8 with BOM, CRLF, HR's own column
names), mostly for two $0 programs of the sandbox catalogue, with the bad rows a real file has:
malformed and missing e-mails, repeats, a priced program, unknown and retired programs, an e-mail
outside a program's allowed domain, formula-looking cells, non-ASCII names.
"""

from __future__ import annotations

import csv
import io
import json
import random
from pathlib import Path

EVENTS = Path(__file__).resolve().parents[1] / "events"
SPRING, CLOUD = "Spring Certification Drive", "Cloud Fundamentals Exam Vouchers"
EXAMPLE = "Example Corp Employee Upskilling"
FIRST = [
    "Ada",
    "Grace",
    "Alan",
    "Katherine",
    "Linus",
    "Margaret",
    "Dennis",
    "Barbara",
    "Ken",
    "Frances",
    "José",
    "Zoë",
    "Søren",
]
FIRST += ["Łukasz", "Chiara", "Nguyễn", "Aoife", "Björk", "Renée"]
LAST = [
    "Lovelace",
    "Hopper",
    "Turing",
    "Johnson",
    "Torvalds",
    "Hamilton",
    "Ritchie",
    "Liskov",
    "Thompson",
    "Allen",
]
LAST += ["García", "Müller", "Wałęsa", "Rossi", "Trần", "O'Brien", "Çelik"]
DEPARTMENTS = ["Engineering", "Support", "Sales", "Training", "Operations"]
COLUMNS = ["Email Address", "First Name", "Last Name", "Employee ID", "Program", "Department"]


def _row(email: str, first: str, last: str, emp: str, program: str, dept: str) -> dict[str, str]:
    return dict(zip(COLUMNS, [email, first, last, emp, program, dept], strict=True))


def main() -> None:
    rng = random.Random(2026)  # noqa: S311 - reproducible sample data
    valid: list[dict[str, str]] = []
    number = 0
    for program, count in ((SPRING, 1410), (CLOUD, 1055), (EXAMPLE, 20)):
        for _ in range(count):
            number += 1
            first, last = rng.choice(FIRST), rng.choice(LAST)
            domain = "example.com" if program == EXAMPLE else "acme-learning.example"
            local = f"{first}.{last}.{number}".lower().encode("ascii", "ignore").decode()
            email = f"{local.replace(chr(39), '')}@{domain}"
            email = email.upper() if rng.random() < 0.3 else email
            valid.append(
                _row(email, first, last, f"E{number:05d}", program, rng.choice(DEPARTMENTS))
            )
    rng.shuffle(valid)
    bad = [
        _row("not-an-email", "Bad", "Format", "X001", SPRING, "Sales"),
        _row("jane.doe@", "Jane", "Doe", "X002", SPRING, "Sales"),
        _row("two@@acme-learning.example", "Two", "Ats", "X003", CLOUD, "Support"),
        _row("", "No", "Email", "X004", CLOUD, "Support"),
        _row("spaces in@acme-learning.example", "Space", "Case", "X005", SPRING, "Operations"),
        _row(
            "priced.1@acme-learning.example",
            "Priced",
            "One",
            "X006",
            "Professional Architect Certification",
            "Engineering",
        ),
        _row(
            "priced.2@acme-learning.example",
            "Priced",
            "Two",
            "X007",
            "Professional Architect Certification",
            "Engineering",
        ),
        _row(
            "unknown.program@acme-learning.example",
            "Unknown",
            "Program",
            "X008",
            "Spring Certification",
            "Training",
        ),
        _row(
            "retired@acme-learning.example",
            "Old",
            "Program",
            "X009",
            "Legacy Networking Exam 2019",
            "Training",
        ),
        _row("outsider@gmail.example", "Out", "Sider", "X010", EXAMPLE, "Sales"),
        _row(
            "formula@acme-learning.example",
            '=HYPERLINK("http://evil.example","click")',
            "Injection",
            "X011",
            CLOUD,
            "+cmd",
        ),
    ]
    for source in valid[:4]:  # the same people again, differently spelled: duplicates
        bad.append({**source, "Email Address": f"  {source['Email Address'].lower()} ",
                    "Employee ID": source["Employee ID"] + "-DUP"})  # fmt: skip
    rows = list(valid)
    for row in bad:
        rows.insert(rng.randrange(5, len(rows)), row)
    assert len(rows) == 2500, len(rows)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=COLUMNS, lineterminator="\r\n")
    writer.writeheader()
    writer.writerows(rows)
    (EVENTS / "sample-recipients.csv").write_text(
        buffer.getvalue(), encoding="utf-8-sig", newline=""
    )

    recipients = [
        {"email": f"new.hire{n:02d}@acme-learning.example", "firstName": rng.choice(FIRST),
         "lastName": rng.choice(LAST), "externalId": f"H{n:04d}"}
        for n in range(1, 26)
    ]  # fmt: skip
    recipients.append({"email": "broken-address", "firstName": "Broken", "lastName": "Address"})
    request = {
        "requestId": "hr-2026-11-21-onboarding-0042",
        "partnerName": "Acme Corp",
        "programName": CLOUD,
        "notes": "November onboarding cohort",
        "recipients": recipients,
    }
    text = json.dumps(request, indent=2, ensure_ascii=False) + "\n"
    (EVENTS / "sqs-request.json").write_text(text, encoding="utf-8")


if __name__ == "__main__":
    main()
