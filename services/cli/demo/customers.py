"""The demo's customers: names, currencies, languages and payment habits, and the profile the ERP publishes."""

from __future__ import annotations

import random
from typing import Any

from services.cli.demo.sample import Behaviour, Customer, pick, slugify

_BEHAVIOURS: tuple[tuple[Behaviour, int], ...] = (
    ("punctual", 55),
    ("late", 23),
    ("partial", 12),
    ("slow", 6),
    ("never", 4),
)
_TERMS = ("30", "30", "45", "45", "60", "45EOM")

_FR_TRADES = (
    "Boulangerie",
    "Transports",
    "Garage",
    "Menuiserie",
    "Imprimerie",
    "Cabinet",
    "Atelier",
    "Fromagerie",
    "Brasserie",
    "Quincaillerie",
    "Librairie",
    "Hôtel",
    "Laboratoires",
    "Électricité",
    "Plomberie",
    "Charcuterie",
    "Agence",
    "Bureau d'études",
    "Serrurerie",
    "Pépinières",
)
_FR_NAMES = (
    "Martin",
    "Bernard",
    "Dubois",
    "Thomas",
    "Robert",
    "Richard",
    "Petit",
    "Durand",
    "Leroy",
    "Moreau",
    "Simon",
    "Laurent",
    "Lefèvre",
    "Michel",
    "Garcia",
    "David",
    "Bertrand",
    "Roux",
    "Vincent",
    "Fournier",
    "Morel",
    "Girard",
    "André",
    "Mercier",
    "Dupont",
    "Lambert",
    "Bonnet",
    "François",
    "Chevalier",
    "Gauthier",
)
_FR_FORMS = ("SARL", "SAS", "SA", "EURL", "& Fils", "Frères")
_FR_FIRST = ("Sophie", "Julien", "Camille", "Nicolas", "Élodie", "Mathieu", "Claire", "Antoine", "Aurélie", "Hugo")
_UK_NAMES = ("Harris", "Clarke", "Walker", "Wright", "Hughes", "Edwards", "Green", "Hall", "Wood", "Turner", "Baker")
_UK_TRADES = ("Engineering", "Logistics", "Foods", "Print", "Builders", "Supplies", "Consulting", "Retail")
_UK_FORMS = ("Ltd", "plc", "& Sons Ltd", "LLP")
_US_NAMES = ("Hudson", "Lakeside", "Pioneer", "Summit", "Redwood", "Bayview", "Granite", "Prairie")
_US_TRADES = ("Trading", "Imports", "Distribution", "Foods", "Hospitality")
_US_FORMS = ("Inc.", "LLC", "Corp.")
_EN_FIRST = ("Emma", "James", "Olivia", "Oliver", "Amelia", "Harry", "Grace", "Jack")


def make_customers(rng: random.Random, count: int) -> list[Customer]:
    people: list[Customer] = []
    names: set[str] = set()
    uk_every = 7  # about one customer in seven belongs to the UK subsidiary
    parts: tuple[tuple[str, ...], ...]
    for n in range(1, count + 1):
        customer_id = f"C-{n:04d}"
        if n % uk_every == 3:
            tenant, currency, language = "acme-uk", "GBP", "en"
            parts = (_UK_NAMES, _UK_TRADES, _UK_FORMS)
        elif n % 11 == 5:
            tenant, currency, language = "acme-fr", "USD", "en"  # export customers invoiced in dollars
            parts = (_US_NAMES, _US_TRADES, _US_FORMS)
        else:
            tenant, currency, language = "acme-fr", "EUR", "en" if rng.random() < 0.04 else "fr"
            parts = (_FR_TRADES, _FR_NAMES, _FR_FORMS)
        name = " ".join(rng.choice(p) for p in parts)
        while name in names:
            name = f"{name} {rng.choice(('Nord', 'Sud', 'Est', 'Ouest', 'II', 'Group'))}"
        names.add(name)
        behaviour = pick(rng, _BEHAVIOURS)
        people.append(Customer(tenant, customer_id, name, currency, language, behaviour, rng.choice(_TERMS)))
    # The sample must show every habit whatever the seed: give the first customers of each kind a fixed habit.
    fixed: list[Behaviour] = ["never", "slow", "partial", "late", "partial", "never"]
    for index, behaviour in zip(range(len(people) - 1, 0, -7), fixed, strict=False):
        c = people[index]
        people[index] = Customer(c.tenant, c.customer_id, c.name, c.currency, c.language, behaviour, c.terms)
    return people


def customer_profile(rng: random.Random, customer: Customer, revision: int = 0) -> dict[str, Any]:
    slug = slugify(customer.name)
    first: tuple[str, ...]
    last: tuple[str, ...]
    if customer.tenant == "acme-uk":
        domain, box, first, last = f"{slug}.co.uk", "accounts", _EN_FIRST, _UK_NAMES
    elif customer.currency == "USD":
        domain, box, first, last = f"{slug}.com", "ap", _EN_FIRST, _UK_NAMES
    else:
        domain, box, first, last = f"{slug}.fr", "comptabilite", _FR_FIRST, _FR_NAMES
    emails = [f"{box}@{domain}"]
    contact = f"{rng.choice(first)} {rng.choice(last)}"
    if revision:
        emails.append(f"{slugify(contact).replace('-', '.')}@{domain}")
    limit = rng.choice((5000, 10000, 15000, 20000, 30000, 50000, 75000, 100000)) * (1 + revision)
    data: dict[str, Any] = {
        "name": customer.name,
        "emails": emails,
        "language": customer.language,
        "segment": rng.choice(("sme", "sme", "sme", "key_account", "public_sector")),
        "policy": "standard-en" if customer.tenant == "acme-uk" else "standard-fr",  # shipped policies
        "credit_limit": {"amount": f"{limit}.00", "currency": customer.currency},
    }
    if rng.random() < 0.6:
        data["contact_name"] = contact
    address = postal_address(customer)
    if address is not None:
        data["postal_address"] = address
    return data


_FR_STREETS = (
    "rue de la République",
    "avenue Jean Jaurès",
    "rue Victor Hugo",
    "boulevard Gambetta",
    "rue du Port",
    "place de la Mairie",
    "rue des Tanneurs",
    "quai de la Loire",
    "chemin des Vignes",
    "rue Pasteur",
)
_FR_CITIES = (
    ("69003", "Lyon"),
    ("75011", "Paris"),
    ("13002", "Marseille"),
    ("33000", "Bordeaux"),
    ("44000", "Nantes"),
    ("59000", "Lille"),
    ("31000", "Toulouse"),
    ("67000", "Strasbourg"),
)
_UK_STREETS = ("High Street", "Station Road", "Church Lane", "Mill Road", "Victoria Street", "Park Avenue")
_UK_CITIES = (
    ("M1 1AE", "Manchester"),
    ("LS1 4DY", "Leeds"),
    ("B2 4QA", "Birmingham"),
    ("BS1 5TR", "Bristol"),
    ("EH1 1YZ", "Edinburgh"),
    ("EC1A 1BB", "London"),
)
_US_STREETS = ("Main Street", "Oak Avenue", "Market Street", "Lake Shore Drive", "Elm Street")
_US_CITIES = (("NY 10001", "New York"), ("IL 60601", "Chicago"), ("CA 94105", "San Francisco"), ("TX 78701", "Austin"))
WITHOUT_ADDRESS = 0.08  # customers the ERP gave no postal address: their letters become an agenda item instead


def postal_address(customer: Customer) -> dict[str, Any] | None:
    """Most customers' postal address (in their country), the same at every revision of the profile; about
    :data:`WITHOUT_ADDRESS` of them have none. Drawn from a generator of its own, so that the rest of the sample is
    what it was before addresses existed."""
    rng = random.Random(f"address:{customer.tenant}:{customer.name}")
    if rng.random() < WITHOUT_ADDRESS:
        return None
    number = rng.randint(1, 180)
    if customer.tenant == "acme-uk":
        code, city = rng.choice(_UK_CITIES)
        street, country, department = f"{number} {rng.choice(_UK_STREETS)}", "GB", "Accounts Payable"
    elif customer.currency == "USD":
        code, city = rng.choice(_US_CITIES)
        street, country, department = f"{number} {rng.choice(_US_STREETS)}", "US", "Accounts Payable"
    else:
        code, city = rng.choice(_FR_CITIES)
        street, country, department = f"{number} {rng.choice(_FR_STREETS)}", "FR", "Service comptabilité"
    return {"lines": [customer.name, department, street], "postal_code": code, "city": city, "country": country}
