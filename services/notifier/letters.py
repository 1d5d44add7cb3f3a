"""A reminder's letter as a PDF: rendered with WeasyPrint from the letter's HTML, with its page count.

What the letter says is :func:`services.notifier.render.render_letter`'s (the e-mail of the level, under the letter's
heading); this module turns it into A4 pages and checks, once at start-up, that WeasyPrint's system libraries are
there (:func:`check_libraries`): without Pango the notifier refuses to start with the Debian packages to install,
rather than failing in the middle of a batch. The bytes are stored by :mod:`shared.ledger.letters`.

The postal address is the customer's ``postal_address`` (ERP contract, ``customer.upserted``); a customer without
one gets no letter: :func:`address_of` says None and the notifier records why, with a task.
"""

from __future__ import annotations

import functools
import io
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date
from typing import Any

from babel import Locale

from services.notifier.errors import NotifierError
from services.notifier.render import LOCALES, format_day
from services.notifier.sender import Sender
from shared.config import ConfigurationError

DEBIAN_PACKAGES = "libpango-1.0-0 libpangoft2-1.0-0 libharfbuzz0b fonts-dejavu-core"
HOME_COUNTRY = "FR"  # the sender's country when its address does not name one: a letter to it prints no country


class LettersUnavailable(NotifierError, ConfigurationError):
    """WeasyPrint cannot render PDFs here (its system libraries are missing): install them and start again.

    A configuration error of the machine: the commands that start the notifier say it in one line and exit 78."""


@dataclass(frozen=True, slots=True)
class Pdf:
    data: bytes
    pages: int


def check_libraries() -> None:
    """Raise :class:`LettersUnavailable` naming the Debian packages if WeasyPrint cannot load Pango here."""
    try:
        _weasyprint()
    except OSError as exc:  # cffi's "cannot load library 'libpango-1.0-0'"
        raise LettersUnavailable(
            f"letters cannot be rendered to PDF: WeasyPrint cannot load its system libraries ({exc}); install them "
            f"with `apt-get install {DEBIAN_PACKAGES}` and start the notifier again"
        ) from None


@functools.cache
def _weasyprint() -> Any:
    import weasyprint  # loads Pango through cffi: an OSError when the libraries are missing

    return weasyprint


@functools.cache
def _fonts() -> Any:
    """One font configuration per process: looking the fonts up again for each letter would double its cost."""
    from weasyprint.text.fonts import FontConfiguration

    return FontConfiguration()


def to_pdf(html: str) -> Pdf:
    """The letter's HTML as PDF bytes and their page count. Nothing is fetched: a URL in the HTML is not followed."""
    weasyprint = _weasyprint()
    document = weasyprint.HTML(string=html, url_fetcher=_no_fetch).render(font_config=_fonts())
    out = io.BytesIO()
    document.write_pdf(out)
    return Pdf(out.getvalue(), len(document.pages))


def _no_fetch(url: str, *args: Any, **kwargs: Any) -> Any:
    raise ValueError(f"a letter fetches nothing ({url[:60]})")


def address_of(profile: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """The customer's postal address as the ERP gave it (lines, postal_code, city, country), or None."""
    address = (profile or {}).get("postal_address")
    if not isinstance(address, Mapping) or not address.get("lines") or not address.get("city"):
        return None
    return {
        "lines": [str(line) for line in address["lines"]],
        "postal_code": str(address.get("postal_code") or ""),
        "city": str(address["city"]),
        "country": str(address.get("country") or ""),
    }


def heading(letter_id: str, address: Mapping[str, Any], sender: Sender, language: str, day: date) -> dict[str, Any]:
    """What the letter's heading needs beside the e-mail's context: its id, the address as the window prints it
    (the country's name in capitals when it is not the sender's country), the sender's place and the date."""
    country = str(address.get("country") or "")
    home = sender_country(sender)
    return {
        "letter_id": letter_id,
        "address": {
            **address,
            "locality": locality(address),
            "abroad": bool(country) and country != home,
            "country_name": country_name(country, language).upper(),
        },
        "place": sender_place(sender),
        "date": format_day(day, language),
    }


def locality(address: Mapping[str, Any]) -> list[str]:
    """The postal code and city as the country's post writes them: "69003 Lyon"; "LEEDS" then "LS1 4DY" in the
    United Kingdom; "Chicago, IL 60601" in the United States."""
    code, city, country = (str(address.get(k) or "") for k in ("postal_code", "city", "country"))
    if country == "GB":
        return [city.upper(), code] if code else [city.upper()]
    if country == "US":
        return [f"{city}, {code}" if code else city]
    return [f"{code} {city}".strip()]


def country_name(code: str, language: str) -> str:
    locale = Locale.parse(LOCALES.get(language, "en_GB"))
    return str(locale.territories.get(code, code))


def sender_place(sender: Sender) -> str:
    """The sender's city, from the last line of its address ("69003 Lyon, France" -> "Lyon"), or ""."""
    if not sender.address:
        return ""
    last = sender.address[-1].split(",")[0]
    words = [word for word in last.split() if not re.search(r"\d", word)]
    return " ".join(words)


def sender_country(sender: Sender) -> str:
    """The sender's country code, from the end of its address ("…, France" -> "FR"); :data:`HOME_COUNTRY` else."""
    if sender.address and "," in sender.address[-1]:
        named = sender.address[-1].rsplit(",", 1)[1].strip().casefold()
        for language in LOCALES.values():
            for code, name in Locale.parse(language).territories.items():
                if str(name).casefold() == named and len(code) == 2:
                    return str(code)
    return HOME_COUNTRY
