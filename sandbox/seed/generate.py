"""Deterministic seed data for both sandboxes: ``python -m sandbox.seed.generate``.

Writes ``sandbox/seed/customcrm.json`` (Customcrm records, PascalCase, loaded by
``python -m sandbox.customcrm --seed``) and ``sandbox/seed/chargebee.json`` (Chargebee
objects keyed by resource, loaded by ``python -m sandbox.chargebee --seed``). Both files
are committed; rerunning this script reproduces them byte for byte (fixed RNG seed,
fixed base dates, no wall clock), so a diff shows exactly what a change to the data did.

The two sides overlap partly, so the first sync run on a fresh machine shows every
decision the engine can make (``README.md`` beside this file lists which record
demonstrates what):

* contacts ⇄ customers: 20 people on both sides matched by email, some with the email in
  another case or with blanks around it, some with a different phone or city on each
  side (newer on one side or the other), some with a field blank on one side; the rest
  exist on one side only. Two CRM contacts are deliberately bad for Chargebee (an invalid
  email, a 200-character first name) to demonstrate quarantine. One CRM contact is a
  tombstone and one Chargebee customer is deleted; one Chargebee customer has no
  ``updated_at`` at all (legacy data a first run must not skip).
* companies ⇄ business entities, products ⇄ items (by SKU, item id = SKU lower-cased),
  users ⇄ order ``created_by``, quotes ⇄ orders (order ``reference_id`` = quote number)
  and CRM orders ⇄ Chargebee orders (``document_number``), each with partial overlap.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

SEED_DIR = Path(__file__).resolve().parent
RNG_SEED = 20250601
#: Every timestamp is derived from this instant, never from the wall clock.
BASE = datetime(2025, 1, 6, 8, 0, 0, tzinfo=UTC)
_B62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"

Json = dict[str, Any]


# --------------------------------------------------------------------------- reference data
@dataclass(frozen=True)
class Place:
    """A real-looking address in one country."""

    country: str  # ISO 3166-1 alpha-2
    city: str
    state: str | None
    zip: str
    street: str
    phone_prefix: str


# fmt: off
PLACES: dict[str, list[Place]] = {
    "NO": [Place("NO", "Oslo", None, "0154", "Karl Johans gate", "+47"),
           Place("NO", "Bergen", None, "5003", "Bryggen", "+47"),
           Place("NO", "Trondheim", None, "7011", "Munkegata", "+47")],
    "SE": [Place("SE", "Stockholm", None, "111 22", "Drottninggatan", "+46"),
           Place("SE", "Göteborg", None, "411 36", "Kungsportsavenyen", "+46"),
           Place("SE", "Malmö", None, "211 20", "Södra Förstadsgatan", "+46")],
    "DK": [Place("DK", "København", None, "1160", "Strøget", "+45"),
           Place("DK", "Aarhus", None, "8000", "Åboulevarden", "+45")],
    "DE": [Place("DE", "Berlin", "Berlin", "10117", "Friedrichstraße", "+49"),
           Place("DE", "München", "Bayern", "80331", "Maximilianstraße", "+49"),
           Place("DE", "Hamburg", "Hamburg", "20095", "Mönckebergstraße", "+49")],
    "FR": [Place("FR", "Paris", "Île-de-France", "75001", "Rue de Rivoli", "+33"),
           Place("FR", "Lyon", "Auvergne-Rhône-Alpes", "69002", "Rue de la République", "+33")],
    "ES": [Place("ES", "Madrid", "Madrid", "28013", "Calle de Alcalá", "+34"),
           Place("ES", "Barcelona", "Cataluña", "08007", "Passeig de Gràcia", "+34"),
           Place("ES", "Sevilla", "Andalucía", "41001", "Calle Sierpes", "+34")],
    "IT": [Place("IT", "Milano", "Lombardia", "20121", "Via Dante", "+39"),
           Place("IT", "Roma", "Lazio", "00184", "Via Nazionale", "+39")],
    "NL": [Place("NL", "Amsterdam", "Noord-Holland", "1012 LG", "Damrak", "+31"),
           Place("NL", "Utrecht", "Utrecht", "3511 AA", "Oudegracht", "+31")],
    "FI": [Place("FI", "Helsinki", None, "00100", "Mannerheimintie", "+358")],
    "PL": [Place("PL", "Kraków", "małopolskie", "31-042", "ulica Floriańska", "+48"),
           Place("PL", "Warszawa", "mazowieckie", "00-367", "Nowy Świat", "+48")],
    "PT": [Place("PT", "Lisboa", None, "1100-148", "Rua Augusta", "+351")],
    "IE": [Place("IE", "Dublin", None, "D02 X285", "Grafton Street", "+353")],
    "GB": [Place("GB", "London", None, "EC1A 1BB", "Aldersgate Street", "+44")],
}
# fmt: on


@dataclass(frozen=True)
class Company:
    """A customer company; ``on_crm``/``be_name`` say on which side it exists."""

    key: str
    name: str
    country: str
    domain: str
    on_crm: bool
    be_name: str | None  # name of the Chargebee business entity, None = not in Chargebee
    identifier: str


# fmt: off
COMPANIES = [
    Company("fjordlys", "Fjordlys AS", "NO", "fjordlys.example", True, "Fjordlys AS", "NO 917 123 456 MVA"),
    Company("nordvik", "Nordvik Maskin AB", "SE", "nordvik.example", True, "Nordvik Maskin AB ",
            "556677-8899"),
    Company("backstrom", "Bäckström & Søn ApS", "DK", "backstrom.example", True, "Bäckström & Søn ApS",
            "DK 31 22 44 55"),
    Company("muller", "Müller Feinmechanik GmbH", "DE", "mueller-fm.example", True,
            "MÜLLER Feinmechanik GmbH", "HRB 184 220"),
    Company("lumiere", "Atelier Lumière SARL", "FR", "lumiere.example", True, None, "SIREN 812 345 678"),
    Company("pena", "Construcciones Peña S.L.", "ES", "pena.example", True, None, "B-86123456"),
    Company("ricci", "Officine Ricci S.p.A.", "IT", "ricci.example", True, None, "IT 01234567890"),
    Company("vdberg", "Van der Berg Logistiek B.V.", "NL", "vdberg.example", True, None, "KvK 34123456"),
    Company("kowalski", "Kowalski Systemy Sp. z o.o.", "PL", "kowalski.example", False,
            "Kowalski Systemy Sp. z o.o.", "KRS 0000123456"),
]
# fmt: on


COMPANY = {c.key: c for c in COMPANIES}


@dataclass(frozen=True)
class Person:
    """One contact/customer; ``variant`` says how the two sides differ (if both exist)."""

    first: str
    last: str
    country: str
    company: str | None  # Company.key, or a free-text employer prefixed with "="
    side: str  # "both" | "crm" | "cb"
    variant: str = "same"
    email_domain: str | None = None


# 20 people on both sides. ``variant`` drives the differences:
#   same           identical on both sides
#   email_case     the CRM has the email in another case / with blanks around it
#   phone_crm_new  a different phone on each side, the CRM edit is newer
#   phone_cb_new   a different phone on each side, the Chargebee edit is newer
#   city_crm_new   moved: another city (and street, zip) on each side, the CRM is newer
#   city_cb_new    moved, Chargebee is newer
#   blank_crm      phone blank in the CRM
#   blank_cb       company and address line 2 blank in Chargebee
#   blank_zip_cb   zip blank in Chargebee
PEOPLE = [
    Person("Ingrid", "Haugen", "NO", "fjordlys", "both", "same"),
    Person("Lars", "Øvrebø", "NO", "fjordlys", "both", "email_case"),
    Person("Astrid", "Lindqvist", "SE", "nordvik", "both", "same"),
    Person("Björn", "Åkesson", "SE", "nordvik", "both", "phone_crm_new"),
    Person("Mette", "Kjærgaard", "DK", "backstrom", "both", "city_cb_new"),
    Person("Søren", "Bäckström", "DK", "backstrom", "both", "same"),
    Person("Jürgen", "Weiß", "DE", "muller", "both", "email_case"),
    Person("Anja", "Müller", "DE", "muller", "both", "blank_cb"),
    Person("Camille", "Lefèvre", "FR", "lumiere", "both", "phone_cb_new"),
    Person("Théo", "Girard", "FR", "=Studio Girard", "both", "same"),
    Person("Lucía", "Fernández", "ES", "pena", "both", "city_crm_new"),
    Person("José", "Peña", "ES", "pena", "both", "email_case"),
    Person("Giulia", "Ricci", "IT", "ricci", "both", "blank_crm"),
    Person("Matteo", "Colombo", "IT", "=Colombo Design", "both", "phone_crm_new"),
    Person("Sanne", "de Vries", "NL", "vdberg", "both", "same"),
    Person("Daan", "van der Berg", "NL", "vdberg", "both", "blank_zip_cb"),
    Person("Aino", "Virtanen", "FI", "=Helsingin Puu Oy", "both", "email_case"),
    Person("Agnieszka", "Wójcik", "PL", "kowalski", "both", "city_crm_new"),
    Person("João", "Gonçalves", "PT", "=Lisboa Digital Lda", "both", "same"),
    Person("Siobhán", "O'Connor", "IE", "=Liffey Analytics Ltd", "both", "phone_cb_new"),
    # CRM only (the last three are special, see build())
    Person("Kari", "Nordmann", "NO", "fjordlys", "crm"),
    Person("Erik", "Sandberg", "SE", "nordvik", "crm"),
    Person("Freja", "Holm", "DK", "backstrom", "crm"),
    Person("Katharina", "Schäfer", "DE", "muller", "crm"),
    Person("Hélène", "Moreau", "FR", "lumiere", "crm"),
    Person("Álvaro", "Ruiz", "ES", "pena", "crm"),
    Person("Chiara", "Bianchi", "IT", "ricci", "crm"),
    Person("Pieter", "Jansen", "NL", "vdberg", "crm"),
    Person("Mikko", "Korhonen", "FI", None, "crm"),
    Person("Zofia", "Kamińska", "PL", None, "crm"),
    Person("Inês", "Carvalho", "PT", None, "crm"),
    Person("Ciarán", "Murphy", "IE", "=Murphy & Daughters", "crm"),
    Person("Oliver", "Bennett", "GB", "=Bennett Consulting", "crm"),
    Person("Nils", "Ødegård", "NO", None, "crm"),
    Person("Elin", "Forsberg", "SE", None, "crm"),
    Person("Raphaël", "Dubois", "FR", "lumiere", "crm"),
    Person("Paolo", "Esposito", "IT", "ricci", "crm"),
    Person("María", "López", "ES", "pena", "crm"),  # invalid email (quarantine demo)
    Person("Maximilian", "Hoffmann", "DE", "muller", "crm"),  # 200-character first name
    Person("Tove", "Eriksen", "NO", None, "crm"),  # tombstone
    # Chargebee only (the last two are special, see build())
    Person("Magnus", "Berg", "NO", None, "cb"),
    Person("Hanna", "Nyström", "SE", None, "cb"),
    Person("Rasmus", "Møller", "DK", None, "cb"),
    Person("Felix", "Köhler", "DE", None, "cb"),
    Person("Léa", "Fontaine", "FR", None, "cb"),
    Person("Pablo", "Jiménez", "ES", "=Jiménez Arquitectos", "cb"),
    Person("Francesca", "Greco", "IT", None, "cb"),
    Person("Emma", "Bakker", "NL", None, "cb"),
    Person("Juha", "Mäkinen", "FI", None, "cb"),
    Person("Paweł", "Zieliński", "PL", "kowalski", "cb"),
    Person("Beatriz", "Sousa", "PT", None, "cb"),
    Person("Aoife", "Kelly", "IE", None, "cb"),
    Person("Harriet", "Clarke", "GB", "=Clarke & Finch LLP", "cb"),
    Person("Ole", "Brekke", "NO", None, "cb"),  # deleted in Chargebee
    Person("Ulla", "Sjöberg", "SE", None, "cb"),  # legacy record without updated_at
]

FREEMAIL = ["example.com", "example.org", "example.net", "mail.example"]

USERS = [
    ("Sigrid", "Aas", "sigrid.aas@nordpulse.example", True),
    ("Lukas", "Meier", "lukas.meier@nordpulse.example", True),
    ("Sofia", "Martins", "sofia.martins@nordpulse.example", True),
    ("Tomasz", "Nowak", "tomasz.nowak@nordpulse.example", True),
    ("Chloé", "Dubois", "chloe.dubois@nordpulse.example", False),
]
#: Creates orders in Chargebee but has no CRM user (the user_order flow must handle it).
CB_ONLY_USER = "emma.lind@nordpulse.example"


@dataclass(frozen=True)
class Product:
    """A catalogue entry; ``side`` and the ``cb_*`` overrides describe the Chargebee item."""

    sku: str
    name: str
    kind: str  # plan | addon | charge
    description: str
    unit: str | None = None
    shippable: bool = False
    side: str = "both"  # both | crm | cb
    crm_archived: bool = False
    cb_name: str | None = None
    cb_description: str | None = None
    cb_status: str = "active"
    metadata: dict[str, Any] = field(default_factory=dict)
    price: int = 0  # minor units per unit, EUR


# fmt: off
PRODUCTS = [
    Product("NP-STARTER", "Nordpulse Starter", "plan", "Up to 5 users, email support.", "user",
            metadata={"tier": "starter"}, price=2900),
    Product("NP-GROWTH", "Nordpulse Growth", "plan", "Up to 50 users, workflows and reports.", "user",
            cb_name="Nordpulse Growth (2025)", metadata={"tier": "growth"}, price=7900),
    Product("NP-ENTERPRISE", "Nordpulse Enterprise", "plan", "Unlimited users, SSO, audit log, SLA.", "user",
            metadata={"tier": "enterprise", "sla": "99.9"}, price=19900),
    Product("NP-EXTRA-SEAT", "Extra seat", "addon", "One more named user.", "seat", price=900),
    Product("NP-SSO", "Single sign-on", "addon", "SAML 2.0 and OIDC single sign-on.",
            cb_description="SAML single sign-on (OIDC in beta).", price=4900),
    Product("NP-STORAGE-100", "Storage 100 GB", "addon", "100 GB of extra document storage.", "100 GB",
            price=1500),
    Product("NP-ONBOARDING", "Guided onboarding", "charge", "Two remote onboarding sessions.", price=45000),
    Product("HW-SCANNER-X2", "Nordpulse Scanner X2", "charge", "Handheld barcode scanner, Bluetooth.",
            "device", shippable=True, cb_status="archived", price=24900),
    Product("NP-API-PLUS", "API Plus", "addon", "Higher API limits and webhooks.", side="crm", price=2900),
    Product("NP-TRAINING-DAY", "Training day (on site)", "charge", "One day of on-site training.", "day",
            side="crm", price=120000),
    Product("HW-PRINTER-L3", "Label printer L3", "charge", "Thermal label printer, 3-inch.", "device",
            shippable=True, side="crm", price=32900),
    Product("NP-LEGACY-BASIC", "Nordpulse Basic (legacy)", "plan", "Retired 2023 plan, kept for history.",
            "user", side="crm", crm_archived=True, price=1900),
    Product("NP-PREMIUM-SUPPORT", "Premium support", "addon", "24/7 phone support, 1-hour response.",
            side="cb", price=9900),
    Product("HW-CABLE-KIT", "Cable kit", "charge", "USB-C and charging cradle for the X2.", "kit",
            shippable=True, side="cb", price=3900),
]
# fmt: on


# --------------------------------------------------------------------------- helpers
def _ascii(text: str) -> str:
    """Lower-case ASCII form of a name, for email local parts."""
    table = str.maketrans(
        {
            "ø": "o",
            "æ": "ae",
            "å": "a",
            "ä": "a",
            "ö": "o",
            "ü": "u",
            "ß": "ss",
            "é": "e",
            "è": "e",
            "ê": "e",
            "ë": "e",
            "à": "a",
            "á": "a",
            "â": "a",
            "ã": "a",
            "ç": "c",
            "í": "i",
            "ì": "i",
            "ï": "i",
            "ñ": "n",
            "ó": "o",
            "ò": "o",
            "ô": "o",
            "õ": "o",
            "ú": "u",
            "ù": "u",
            "ł": "l",
            "ń": "n",
            "ś": "s",
            "ź": "z",
            "ż": "z",
            "ą": "a",
            "ę": "e",
            "ć": "c",
            "'": "",
            " ": "",
        }
    )
    return text.lower().translate(table)


class Gen:
    """Deterministic generators (ids, phones, timestamps) on one seeded RNG."""

    def __init__(self) -> None:
        self.rng = random.Random(RNG_SEED)
        self._crm_clock = BASE
        self._used_ids: set[str] = set()
        self._crm_stamps: set[datetime] = set()

    def b62(self, length: int) -> str:
        return "".join(self.rng.choice(_B62) for _ in range(length))

    def cb_id(self, prefix: str) -> str:
        """Chargebee-looking id (``cust_AzZ…``): random-looking, reproducible, unique."""
        while True:
            candidate = f"{prefix}AzZ{self.b62(13)}"
            if candidate not in self._used_ids:
                self._used_ids.add(candidate)
                return candidate

    def phone(self, place: Place) -> str:
        digits = "".join(str(self.rng.randint(0, 9)) for _ in range(8))
        return f"{place.phone_prefix} {digits[:3]} {digits[3:5]} {digits[5:]}"

    def crm_ts(self) -> datetime:
        """Next CRM ``UpdatedAt`` in a steadily advancing sequence (unique, like the server's)."""
        self._crm_clock += timedelta(hours=self.rng.randint(3, 40))
        return self.crm_ts_near(self._crm_clock)

    def crm_ts_near(self, moment: datetime) -> datetime:
        """A unique CRM ``UpdatedAt`` within a second of ``moment`` (records tied to a sale)."""
        while True:
            candidate = moment.replace(microsecond=self.rng.randint(0, 999_999))
            if candidate not in self._crm_stamps:
                self._crm_stamps.add(candidate)
                return candidate


def iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def unix(moment: datetime) -> int:
    return int(moment.timestamp())


def crm_meta(record_id: str, updated: datetime, gen: Gen, *, version: int | None = None) -> Json:
    """Id plus server-managed fields, created some days before the last update."""
    created = updated - timedelta(days=gen.rng.randint(1, 60), seconds=gen.rng.randint(0, 86_399))
    return {
        "Id": record_id,
        "Version": version if version is not None else gen.rng.randint(1, 5),
        "CreatedAt": iso(created),
        "UpdatedAt": iso(updated),
        "Deleted": False,
        "ExternalRef": None,
    }


# --------------------------------------------------------------------------- the scenario
@dataclass
class PersonData:
    """Both sides' view of one person, before they are written out."""

    person: Person
    place: Place
    street_no: int
    email: str
    phone: str
    crm_id: str | None = None
    cb_id: str | None = None
    crm_updated: datetime | None = None


def build(gen: Gen) -> tuple[Json, Json]:
    """Return (customcrm seed, chargebee seed)."""
    crm: Json = {"users": [], "customers": [], "products": [], "contacts": [], "quotes": [], "orders": []}
    cb: Json = {
        "business_entities": [],
        "item_families": [],
        "items": [],
        "customers": [],
        "invoices": [],
        "orders": [],
    }

    # ---- users (CRM) -----------------------------------------------------------------
    user_ids: dict[str, str] = {}
    for n, (first, last, email, active) in enumerate(USERS, 1):
        uid = f"USR-{n:06d}"
        user_ids[email] = uid
        crm["users"].append(
            {
                **crm_meta(uid, gen.crm_ts(), gen),
                "Email": email,
                "FirstName": first,
                "LastName": last,
                "Active": active,
            }
        )

    # ---- companies (CRM customers) and business entities ---------------------------------
    company_ids: dict[str, str] = {}
    be_ids: dict[str, str] = {}
    n = 0
    for company in COMPANIES:
        place = PLACES[company.country][0]
        updated = gen.crm_ts()
        if company.on_crm:
            n += 1
            cid = f"CUS-{n:06d}"
            company_ids[company.key] = cid
            crm["customers"].append(
                {
                    **crm_meta(cid, updated, gen),
                    "Name": company.name,
                    "StreetAddress1": f"{place.street} {gen.rng.randint(1, 90)}",
                    "StreetAddress2": None,
                    "City": place.city,
                    "ZipCode": place.zip,
                    "Country": place.country,
                    "Website": f"https://www.{company.domain}",
                    "Phone": gen.phone(place),
                    "Email": f"post@{company.domain}",
                    "Fax": None,
                    "Description": f"{company.name}, customer since {2015 + gen.rng.randint(0, 9)}.",
                    "EntityIdentifier": company.identifier,
                }
            )
        if company.be_name is not None:
            be_id = f"be_{company.key}"
            be_ids[company.key] = be_id
            shift = timedelta(days=gen.rng.choice([-20, 15]), seconds=gen.rng.randint(0, 3600))
            cb["business_entities"].append(
                {
                    "id": be_id,
                    "name": company.be_name,
                    "status": "active",
                    "deleted": False,
                    "created_at": unix(updated + shift - timedelta(days=300)),
                    "updated_at": unix(updated + shift),
                }
            )

    # ---- products / item families / items -----------------------------------------------
    families = {
        "HW": ("nordpulse-hardware", "Nordpulse Hardware", "Scanners, printers and accessories."),
        "NP": ("nordpulse-software", "Nordpulse Software", "Subscriptions, add-ons and services."),
    }
    for fid, name, description in families.values():
        cb["item_families"].append(
            {
                "id": fid,
                "name": name,
                "description": description,
                "status": "active",
                "updated_at": unix(BASE - timedelta(days=400)),
            }
        )
    for n, product in enumerate(PRODUCTS, 1):
        updated = gen.crm_ts()
        if product.side in ("both", "crm"):
            pid = f"PRD-{len(crm['products']) + 1:06d}"
            crm["products"].append(
                {
                    **crm_meta(pid, updated, gen),
                    "Sku": product.sku,
                    "Name": product.name,
                    "ExternalName": product.name,
                    "Description": product.description,
                    "Kind": product.kind,
                    "Unit": product.unit,
                    "Shippable": product.shippable,
                    "Archived": product.crm_archived,
                    "Metadata": dict(product.metadata),
                }
            )
        if product.side in ("both", "cb"):
            item: Json = {
                "id": product.sku.lower(),
                "name": product.cb_name or product.name,
                "external_name": product.cb_name or product.name,
                "description": product.cb_description or product.description,
                "status": product.cb_status,
                "type": product.kind,
                "item_family_id": families[product.sku[:2]][0],
                "is_shippable": product.shippable,
                "updated_at": unix(updated + timedelta(days=gen.rng.choice([-9, 4]), minutes=n)),
            }
            if product.unit:
                item["unit"] = product.unit
            if product.metadata:
                item["metadata"] = dict(product.metadata)
            if product.cb_status == "archived":
                item["archived_at"] = item["updated_at"]
            cb["items"].append(item)

    # ---- people ---------------------------------------------------------------------------
    people: list[PersonData] = []
    for i, person in enumerate(PEOPLE):
        place = PLACES[person.country][i % len(PLACES[person.country])]
        employer = COMPANY.get(person.company or "")
        domain = employer.domain if employer else FREEMAIL[i % len(FREEMAIL)]

        email = f"{_ascii(person.first)}.{_ascii(person.last)}@{domain}"
        people.append(PersonData(person, place, gen.rng.randint(1, 120), email, gen.phone(place)))

    crm_n = 0
    for data in people:
        person = data.person
        if person.side not in ("both", "crm"):
            continue
        crm_n += 1
        data.crm_id = f"CON-{crm_n:06d}"
        data.crm_updated = gen.crm_ts()
        employer = COMPANY.get(person.company or "")
        record: Json = {
            **crm_meta(data.crm_id, data.crm_updated, gen),
            "FirstName": person.first,
            "LastName": person.last,
            "Email": data.email,
            "Phone": data.phone,
            "Company": employer.name if employer else (person.company or "=")[1:] or None,
            "CustomerId": company_ids.get(employer.key) if employer else None,
            "StreetAddress1": f"{data.place.street} {data.street_no}",
            "StreetAddress2": f"{gen.rng.randint(1, 6)}. etasje" if data.place.country == "NO" else None,
            "City": data.place.city,
            "State": data.place.state,
            "ZipCode": data.place.zip,
            "Country": data.place.country,
        }
        variant = person.variant
        if variant == "email_case":
            local, _, domain = data.email.partition("@")
            styles = [
                f" {local.title()}@{domain}",
                f"{local.upper()}@{domain.upper()}",
                f"{local}@{domain}  ",
                f"{local.title()}@{domain.title()}",
            ]
            record["Email"] = styles[crm_n % len(styles)]
        elif variant in ("phone_crm_new", "phone_cb_new"):
            record["Phone"] = gen.phone(data.place)  # the CRM has another number than Chargebee
        elif variant == "city_crm_new":  # moved; only the CRM knows (Chargebee has the old address)
            moved = next(p for p in PLACES[data.place.country] if p.city != data.place.city)
            record.update(
                {
                    "StreetAddress1": f"{moved.street} {gen.rng.randint(1, 120)}",
                    "City": moved.city,
                    "State": moved.state,
                    "ZipCode": moved.zip,
                }
            )
        elif variant == "blank_crm":
            record["Phone"] = None
        if (person.first, person.last) == ("María", "López"):
            record["Email"] = "maria.lopez@@example"  # invalid: quarantine demo
        if (person.first, person.last) == ("Maximilian", "Hoffmann"):
            # 200 characters: fine for the CRM (255) but over Chargebee's 150 for first_name.
            long_name = "Maximilian Alexander Friedrich Wilhelm Karl-Theodor Johannes Ludwig Sebastian "
            record["FirstName"] = (long_name * 3)[:200]
        if (person.first, person.last) == ("Tove", "Eriksen"):
            record["Deleted"] = True  # a tombstone: deleted in the CRM, never synced
        crm["contacts"].append(record)

    for data in people:
        person = data.person
        if person.side not in ("both", "cb"):
            continue
        data.cb_id = gen.cb_id("cust_")
        employer = COMPANY.get(person.company or "")
        variant = person.variant
        if data.crm_updated is not None:
            # Which side edited last decides a first-run difference under "newer wins".
            days = -6 if variant.endswith("crm_new") else 5
            updated = data.crm_updated + timedelta(days=days, seconds=gen.rng.randint(0, 86_399))
        else:
            updated = BASE + timedelta(days=gen.rng.randint(5, 150), seconds=gen.rng.randint(0, 86_399))
        created = updated - timedelta(days=gen.rng.randint(20, 400))
        address: Json = {
            "first_name": person.first,
            "last_name": person.last,
            "line1": f"{data.place.street} {data.street_no}",
            "city": data.place.city,
            "zip": data.place.zip,
            "country": data.place.country,
        }
        if data.place.country == "NO" and person.side == "both":
            crm_line2 = next(c["StreetAddress2"] for c in crm["contacts"] if c["Id"] == data.crm_id)
            address["line2"] = crm_line2
        if data.place.state:
            address["state"] = data.place.state
        customer: Json = {
            "id": data.cb_id,
            "first_name": person.first,
            "last_name": person.last,
            "email": data.email,
            "phone": data.phone,
            "company": employer.name if employer else (person.company or "=")[1:] or None,
            "billing_address": address,
            "preferred_currency_code": {"SE": "SEK", "NO": "NOK", "DK": "DKK", "GB": "GBP", "PL": "PLN"}.get(
                data.place.country, "EUR"
            ),
            "deleted": False,
            "created_at": unix(created),
            "updated_at": unix(updated),
        }
        if employer and employer.key in be_ids:
            customer["business_entity_id"] = be_ids[employer.key]
        if variant == "city_cb_new":  # moved; only Chargebee knows
            moved = next(p for p in PLACES[data.place.country] if p.city != data.place.city)
            address.update(
                {"line1": f"{moved.street} {gen.rng.randint(1, 120)}", "city": moved.city, "zip": moved.zip}
            )
            if moved.state:
                address["state"] = moved.state
        elif variant == "blank_cb":
            customer.pop("company")
            customer.pop("business_entity_id", None)
            address.pop("line2", None)
        elif variant == "blank_zip_cb":
            address.pop("zip")
        if (person.first, person.last) == ("Ole", "Brekke"):
            customer["deleted"] = True
        if (person.first, person.last) == ("Ulla", "Sjöberg"):
            customer["updated_at"] = None  # legacy record: Chargebee never stamped it
        if customer.get("company", "") is None:
            customer.pop("company")
        cb["customers"].append(customer)

    # ---- invoices and orders (Chargebee), quotes and orders (CRM) ---------------------------
    by_name = {(d.person.first, d.person.last): d for d in people}
    item_price = {p.sku.lower(): p for p in PRODUCTS if p.side in ("both", "cb")}

    @dataclass(frozen=True)
    class Sale:
        """One Chargebee invoice (and its order unless ``order`` is False)."""

        n: int
        who: tuple[str, str]
        lines: tuple[tuple[str, int], ...]  # (item id, quantity)
        created_by: str
        status: str
        quote: str | None = None
        order: bool = True

    sales = [
        Sale(1, ("Ingrid", "Haugen"), (("np-growth", 12), ("np-onboarding", 1)), USERS[0][2], "processing"),
        Sale(2, ("Björn", "Åkesson"), (("hw-scanner-x2", 4),), USERS[1][2], "shipped"),
        Sale(
            3,
            ("Jürgen", "Weiß"),
            (("np-enterprise", 25), ("np-sso", 1)),
            USERS[1][2],
            "complete",
            "Q-2025-0003",
        ),
        Sale(4, ("Camille", "Lefèvre"), (("np-starter", 3),), USERS[2][2], "complete"),
        Sale(5, ("Sanne", "de Vries"), (("np-growth", 8), ("np-extra-seat", 2)), USERS[3][2], "processing"),
        Sale(
            6,
            ("Lucía", "Fernández"),
            (("np-growth", 15), ("np-storage-100", 2)),
            USERS[2][2],
            "new",
            "Q-2025-0004",
        ),
        Sale(7, ("Magnus", "Berg"), (("np-starter", 2),), CB_ONLY_USER, "complete"),
        Sale(
            8,
            ("Giulia", "Ricci"),
            (("hw-scanner-x2", 2), ("hw-cable-kit", 2)),
            USERS[0][2],
            "awaiting_shipment",
        ),
        Sale(
            9,
            ("Agnieszka", "Wójcik"),
            (("np-enterprise", 40), ("np-premium-support", 1)),
            USERS[3][2],
            "processing",
            "Q-2025-0006",
        ),
        Sale(10, ("Harriet", "Clarke"), (("np-growth", 5),), CB_ONLY_USER, "delivered"),
        Sale(11, ("Anja", "Müller"), (("np-onboarding", 1),), USERS[1][2], "new", order=False),
    ]
    carriers = [
        ("DHL Express", "https://www.dhl.example/track?id="),
        ("PostNord", "https://tracking.postnord.example/"),
        ("UPS", "https://www.ups.example/track?tracknum="),
    ]
    sale_time: dict[int, datetime] = {}
    cb_orders: dict[int, Json] = {}
    for sale in sales:
        data = by_name[sale.who]
        when = BASE + timedelta(
            days=20 + 11 * sale.n, hours=gen.rng.randint(8, 17), minutes=gen.rng.randint(0, 59)
        )
        sale_time[sale.n] = when
        currency = "EUR"
        lines: list[Json] = []
        for k, (item_id, qty) in enumerate(sale.lines, 1):
            product = item_price[item_id]
            lines.append(
                {
                    "id": f"li_inv{1000 + sale.n}_{k}",
                    "entity_type": {"plan": "plan_item_price", "addon": "addon_item_price"}.get(
                        product.kind, "charge_item_price"
                    ),
                    "entity_id": f"{item_id}-{currency}-{'monthly' if product.kind != 'charge' else 'once'}",
                    "description": product.cb_name or product.name,
                    "quantity": qty,
                    "unit_amount": product.price,
                    "amount": product.price * qty,
                }
            )
        total = sum(li["amount"] for li in lines)
        invoice_id = f"INV-{1000 + sale.n}"
        customer = next(c for c in cb["customers"] if c["id"] == data.cb_id)
        ship = {k: v for k, v in customer["billing_address"].items()}
        cb["invoices"].append(
            {
                "id": invoice_id,
                "customer_id": data.cb_id,
                "status": "paid",
                "date": unix(when),
                "paid_at": unix(when + timedelta(hours=2)),
                "currency_code": currency,
                "line_items": lines,
                "sub_total": total,
                "tax": 0,
                "total": total,
                "amount_paid": total,
                "amount_due": 0,
                "shipping_address": ship,
                "updated_at": unix(when + timedelta(hours=2)),
            }
        )
        if not sale.order:
            continue
        order_updated = when + timedelta(days=gen.rng.randint(1, 9), hours=gen.rng.randint(0, 12))
        order: Json = {
            "id": gen.cb_id("ord_"),
            "document_number": str(5000 + sale.n),
            "invoice_id": invoice_id,
            "customer_id": data.cb_id,
            "status": sale.status,
            "payment_status": "paid",
            "order_type": "system_generated",
            "fulfillment_status": {
                "new": "Awaiting review",
                "processing": "Picking",
                "shipped": "In transit",
                "complete": "Fulfilled",
                "delivered": "Delivered",
                "awaiting_shipment": "Packed",
            }[sale.status],
            "order_date": unix(when),
            "shipping_date": unix(when + timedelta(days=3)),
            "created_by": sale.created_by,
            "created_at": unix(when + timedelta(hours=2)),
            "status_update_at": unix(order_updated),
            "updated_at": unix(order_updated),
            "currency_code": currency,
            "sub_total": total,
            "tax": 0,
            "total": total,
            "amount_paid": total,
            "shipping_address": ship,
            "order_line_items": [
                {
                    "id": f"oli_{invoice_id}_{k}",
                    "invoice_id": invoice_id,
                    "invoice_line_item_id": li["id"],
                    "unit_price": li["unit_amount"],
                    "description": li["description"],
                    "amount": li["amount"],
                    "fulfillment_quantity": li["quantity"],
                    "fulfillment_amount": li["amount"],
                    "is_shippable": item_price[li["entity_id"].rsplit("-", 2)[0]].shippable,
                    "sku": li["entity_id"].rsplit("-", 2)[0].upper(),
                    "status": "queued",
                    "entity_type": li["entity_type"],
                    "entity_id": li["entity_id"],
                }
                for k, li in enumerate(lines, 1)
            ],
        }
        if sale.quote:
            order["reference_id"] = sale.quote
        if sale.status in ("shipped", "complete", "delivered"):
            carrier, url = carriers[sale.n % len(carriers)]
            tracking = f"{carrier[:3].upper()}{gen.rng.randint(10**9, 10**10 - 1)}"
            order.update(
                {
                    "shipment_carrier": carrier,
                    "tracking_id": tracking,
                    "tracking_url": url + tracking,
                    "shipped_at": unix(when + timedelta(days=2)),
                }
            )
            if sale.status in ("complete", "delivered"):
                order["delivered_at"] = unix(when + timedelta(days=4))
        if sale.n == 5:
            order["note"] = "Customer asked for delivery after 10:00."
        cb["orders"].append(order)
        cb_orders[sale.n] = order

    def contact(who: tuple[str, str]) -> PersonData:
        return by_name[who]

    def company_of(data: PersonData) -> str | None:
        employer = COMPANY.get(data.person.company or "")
        return company_ids.get(employer.key) if employer else None

    # CRM quotes: three are the quotes behind Chargebee orders (reference_id), three are not.
    quotes = [
        (
            "Q-2025-0001",
            ("Astrid", "Lindqvist"),
            USERS[0][2],
            "draft",
            94800,
            None,
            None,
            "Growth for the Göteborg office; waiting for headcount.",
        ),
        ("Q-2025-0002", ("Matteo", "Colombo"), USERS[2][2], "sent", 35700, None, None, None),
        (
            "Q-2025-0003",
            ("Jürgen", "Weiß"),
            USERS[1][2],
            "accepted",
            None,
            3,
            "5003",
            "Signed by Jürgen Weiß on the phone; SSO included.",
        ),
        ("Q-2025-0004", ("Lucía", "Fernández"), USERS[2][2], "accepted", None, 6, None, None),
        (
            "Q-2025-0005",
            ("Théo", "Girard"),
            USERS[3][2],
            "declined",
            8700,
            None,
            None,
            "Went with a competitor.",
        ),
        (
            "Q-2025-0006",
            ("Agnieszka", "Wójcik"),
            USERS[3][2],
            "accepted",
            None,
            9,
            "5009",
            "Enterprise, 40 seats, premium support.",
        ),
    ]
    for n, (number, who, owner, status, amount, sale_n, order_number, notes) in enumerate(quotes, 1):
        data = contact(who)
        when = sale_time[sale_n] - timedelta(days=6) if sale_n else BASE + timedelta(days=30 + 9 * n)
        updated = gen.crm_ts()
        if sale_n is not None:  # accepted: last edited when it was billed
            amount = cb_orders[sale_n]["total"]
            updated = gen.crm_ts_near(sale_time[sale_n] + timedelta(hours=5))
        record = {
            **crm_meta(f"QUO-{n:06d}", updated, gen),
            "Number": number,
            "ContactId": data.crm_id,
            "CustomerId": company_of(data),
            "OwnerUserId": user_ids[owner],
            "Status": status,
            "Notes": notes,
            "ValidUntil": (when + timedelta(days=30)).date().isoformat(),
            "InvoiceId": f"INV-{1000 + sale_n}" if sale_n else None,
            "OrderNumber": order_number,
            "Amount": amount,
            "Currency": "EUR",
        }
        crm["quotes"].append(record)

    # CRM orders: three mirror Chargebee orders (same document number, some fields differ),
    # three exist only in the CRM (two without an invoice: Chargebee cannot create those).
    for n, sale_n in enumerate((1, 2, 5), 1):
        cb_order = cb_orders[sale_n]
        sale = sales[sale_n - 1]
        data = contact(sale.who)
        ship = cb_order["shipping_address"]
        # Who edited last: the CRM after Chargebee for orders 1 (tracking) and 5 (note),
        # Chargebee after the CRM for order 2 (it shipped).
        cb_updated = datetime.fromtimestamp(cb_order["updated_at"], UTC)
        offset = {1: timedelta(days=1), 2: timedelta(days=-2), 5: timedelta(hours=3)}[sale_n]
        record = {
            **crm_meta(f"ORD-{n:06d}", gen.crm_ts_near(cb_updated + offset), gen),
            "Number": cb_order["document_number"],
            "ContactId": data.crm_id,
            "CustomerId": company_of(data),
            "OwnerUserId": user_ids.get(sale.created_by),
            "Status": cb_order["status"],
            "FulfillmentStatus": cb_order["fulfillment_status"],
            "TrackingId": cb_order.get("tracking_id"),
            "TrackingUrl": cb_order.get("tracking_url"),
            "Carrier": cb_order.get("shipment_carrier"),
            "Note": cb_order.get("note"),
            "OrderDate": sale_time[sale_n].date().isoformat(),
            "ShippedAt": iso(datetime.fromtimestamp(cb_order["shipped_at"], UTC))
            if "shipped_at" in cb_order
            else None,
            "DeliveredAt": None,
            "ShippingStreetAddress1": ship.get("line1"),
            "ShippingStreetAddress2": ship.get("line2"),
            "ShippingCity": ship.get("city"),
            "ShippingZipCode": ship.get("zip"),
            "ShippingCountry": ship.get("country"),
            "ReferenceId": cb_order.get("reference_id"),
            "InvoiceId": cb_order["invoice_id"],
            "Total": cb_order["total"],
            "Currency": cb_order["currency_code"],
        }
        if sale_n == 1:  # the warehouse added tracking in the CRM; Chargebee has none yet
            record.update(
                {
                    "Carrier": "Bring",
                    "TrackingId": "BRG70012345678",
                    "TrackingUrl": "https://tracking.bring.example/BRG70012345678",
                }
            )
        elif sale_n == 2:  # Chargebee says shipped, the CRM still says processing
            record.update(
                {
                    "Status": "processing",
                    "FulfillmentStatus": "Picking",
                    "TrackingId": None,
                    "TrackingUrl": None,
                    "Carrier": None,
                    "ShippedAt": None,
                }
            )
        elif sale_n == 5:  # both sides edited the note: a conflict
            record["Note"] = "Deliver to the loading dock, not reception."
        crm["orders"].append(record)

    crm_only_orders = [
        ("SO-2025-0101", ("Kari", "Nordmann"), USERS[0][2], "new", None, 59400, "Awaiting credit check"),
        ("SO-2025-0102", ("Hélène", "Moreau"), USERS[2][2], "on_hold", None, 24900, "On hold: address check"),
        ("SO-2025-0103", ("Anja", "Müller"), USERS[1][2], "new", 11, 45000, None),
    ]
    for k, (number, who, owner, status, sale_n, total, fulfilment) in enumerate(crm_only_orders, 4):
        data = contact(who)
        row = next(c for c in crm["contacts"] if c["Id"] == data.crm_id)
        crm["orders"].append(
            {
                **crm_meta(f"ORD-{k:06d}", gen.crm_ts(), gen),
                "Number": number,
                "ContactId": data.crm_id,
                "CustomerId": company_of(data),
                "OwnerUserId": user_ids[owner],
                "Status": status,
                "FulfillmentStatus": fulfilment,
                "TrackingId": None,
                "TrackingUrl": None,
                "Carrier": None,
                "Note": None,
                "OrderDate": (BASE + timedelta(days=120 + k)).date().isoformat(),
                "ShippedAt": None,
                "DeliveredAt": None,
                "ShippingStreetAddress1": row["StreetAddress1"],
                "ShippingStreetAddress2": row["StreetAddress2"],
                "ShippingCity": row["City"],
                "ShippingZipCode": row["ZipCode"],
                "ShippingCountry": row["Country"],
                "ReferenceId": None,
                "InvoiceId": f"INV-{1000 + sale_n}" if sale_n else None,
                "Total": total,
                "Currency": "EUR",
            }
        )
    return crm, cb


def render(data: Json) -> str:
    """Stable, reviewable JSON text (UTF-8, two-space indent, trailing newline)."""
    return json.dumps(data, ensure_ascii=False, indent=2) + "\n"


def main(out_dir: Path = SEED_DIR) -> dict[str, int]:
    """Write both seed files; returns record counts for a one-line summary."""
    crm, cb = build(Gen())
    (out_dir / "customcrm.json").write_text(render(crm), encoding="utf-8")
    (out_dir / "chargebee.json").write_text(render(cb), encoding="utf-8")
    counts = {f"customcrm.{k}": len(v) for k, v in crm.items()}
    counts.update({f"chargebee.{k}": len(v) for k, v in cb.items()})
    return counts


if __name__ == "__main__":
    summary = main()
    print(", ".join(f"{k}={v}" for k, v in summary.items()))
