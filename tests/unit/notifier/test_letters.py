"""Letters that read right: dates, plurals, the registered-letter mention, the signatory, the rates, the totals once,
the "also outstanding" and claims sections, amounts in another currency, and legal mentions that match the law."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from services.notifier.mime import UnsafeHeaderText
from services.notifier.render import (
    LANGUAGES,
    LAWS,
    LEVEL_TEMPLATES,
    TEMPLATES,
    format_day,
    format_days,
    load_templates,
    render,
    sample_reminder,
)
from services.notifier.sender import Sender, Signatory, load_sender, refuse_placeholder
from shared.config import ConfigurationError

TEAM = Sender(company="Fournitures Durand SA", address=("3 quai Est", "69002 Lyon"), iban="FR76 1234", email="ar@d.fr")
SIGNED = Sender(
    company="Fournitures Durand SA",
    iban="FR76 1234",
    email="ar@d.fr",
    signatory=Signatory("Marie Durand", titles=(("fr", "Responsable du crédit clients"), ("en", "Credit Manager"))),
)
PROFILE: dict[str, Any] = {"name": "Boulangeries Martin SAS", "contact_name": "Claire Martin", "language": "fr"}
NNBSP, NBSP = "\u202f", "\xa0"
THREATS = ("mettons en demeure", "contraints", "procédure", "sans autre avis", "proceedings", "court", "suspend")


def text(data: dict[str, Any], language: str = "fr", sender: Sender = TEAM) -> str:
    return render(data, PROFILE, sender, language).text


# ----------------------------------------------------------------------------------------------- dates, plurals
@pytest.mark.parametrize(
    ("day", "language", "written"),
    [
        ("2026-10-01", "fr", "1er octobre 2026"),
        ("2026-10-02", "fr", "2 octobre 2026"),
        ("2026-10-21", "fr", "21 octobre 2026"),
        ("2026-10-01", "en", "1 October 2026"),
    ],
)
def test_the_first_of_the_month_is_1er_in_french_only(day: str, language: str, written: str) -> None:
    assert format_day(day, language) == written


def test_a_letter_writes_1er_in_every_date_it_prints() -> None:
    # Given an invoice issued on 1 October, an earlier notice of 1 September, and a reminder of 1 December
    data = sample_reminder("formal_notice", law="fr")
    data["as_of"] = "2026-12-01T08:00:00Z"
    data["lines"][0]["notices"][0]["on"] = "2026-09-01"
    # When it is rendered in French
    letter = text(data)
    # Then every first of a month reads "1er", never "1 octobre"
    assert "Le 1er décembre 2026" in letter and "du 1er octobre 2026" in letter
    assert "notre rappel du 1er septembre 2026" in letter
    assert not re.search(
        r"\b1 (janvier|février|mars|avril|mai|juin|juillet|août|septembre|octobre|novembre|décembre)", letter
    )


@pytest.mark.parametrize(
    ("count", "fr", "en"),
    [(0, f"0{NBSP}jour", "0 days"), (1, f"1{NBSP}jour", "1 day"), (2, f"2{NBSP}jours", "2 days")],
)
def test_days_take_the_plural_of_the_language(count: int, fr: str, en: str) -> None:
    assert format_days(count, "fr") == fr and format_days(count, "en") == en


@pytest.mark.parametrize(("days", "fr", "en"), [(1, f"1{NBSP}jour de retard", "1 day late"),
                                                (12, f"12{NBSP}jours de retard", "12 days late")])  # fmt: skip
def test_a_line_says_how_late_with_the_right_plural(days: int, fr: str, en: str) -> None:
    data = sample_reminder("reminder_1")
    data["lines"][0]["days_late"] = days
    assert f"{fr}, pénalités" in text(data, "fr") and f"{en}, late-payment interest" in text(data, "en")
    assert "jour(s)" not in text(data, "fr") and "day(s)" not in text(data, "en")


def test_an_invoice_not_yet_late_does_not_say_0_days_late() -> None:
    data = sample_reminder("courtesy", charges=False)
    data["lines"][0]["days_late"] = 0
    assert "de retard" not in text(data, "fr") and " late" not in text(data, "en")


# ------------------------------------------------------------------------------------------ registered letters
@pytest.mark.parametrize(
    ("law", "language", "mention"),
    [
        (None, "fr", "Lettre recommandée avec accusé de réception"),
        ("fr", "fr", "Lettre recommandée avec accusé de réception"),
        ("eu", "fr", "Lettre recommandée avec accusé de réception"),
        ("fr", "en", "By registered letter with acknowledgement of receipt"),
        ("uk", "en", "Sent by recorded delivery"),
        ("uk", "fr", "Lettre envoyée en recommandé (recorded delivery)"),
    ],
)
def test_a_registered_letter_says_so_in_the_words_of_its_law(law: str | None, language: str, mention: str) -> None:
    # Given the same formal notice by registered letter and by e-mail
    letter = sample_reminder("formal_notice", law=law) if law else sample_reminder("formal_notice")
    letter["channel"] = "letter"
    email = {**letter, "channel": "email"}
    # When both are rendered, Then only the letter carries the mention, first, in text and HTML
    rendered = render(letter, PROFILE, TEAM, language)
    assert rendered.text.startswith(f"{mention}\n\n") and f"<p><strong>{mention}</strong></p>" in rendered.html
    sent = render(email, PROFILE, TEAM, language)
    assert mention not in sent.text and mention not in sent.html
    assert "recommand" not in sent.text and "registered letter" not in sent.text and "recorded" not in sent.text


def test_a_uk_letter_is_not_called_an_lrar() -> None:
    letter = text(sample_reminder("formal_notice", law="uk"), "en")
    assert "acknowledgement of receipt" not in letter and "Sent by recorded delivery" in letter


# ------------------------------------------------------------------------------------------------- signatory
def test_a_letter_is_signed_by_the_signatory_with_the_title_in_its_language() -> None:
    data = sample_reminder("formal_notice")
    fr, en = render(data, PROFILE, SIGNED, "fr"), render(data, PROFILE, SIGNED, "en")
    assert "salutations distinguées.\n\nMarie Durand\nResponsable du crédit clients\nFournitures Durand SA\n" in fr.text
    assert "Yours faithfully,\n\nMarie Durand\nCredit Manager\nFournitures Durand SA\n" in en.text
    assert "Marie Durand<br>Responsable du crédit clients<br><strong>Fournitures Durand SA</strong>" in fr.html
    assert "service comptabilité" not in fr.text and "Accounts receivable" not in en.text


def test_without_a_signatory_the_team_signs_as_before() -> None:
    data = sample_reminder("formal_notice")
    assert "salutations distinguées.\n\nLe service comptabilité clients\nFournitures Durand SA\n" in text(data)
    assert "Yours faithfully,\n\nAccounts receivable\nFournitures Durand SA\n" in text(data, "en")


def test_the_signatory_comes_from_the_sender_file_per_tenant(tmp_path: Path) -> None:
    # Given a default signatory with a title per language, a tenant with its own, and one with a plain title
    path = tmp_path / "sender.yaml"
    path.write_text(
        "default:\n  company: A\n"
        "  signatory: {name: Marie Durand, title: {fr: Responsable crédit, en: Credit Manager}}\n"
        "tenants:\n  uk: {company: B, signatory: {name: John Smith, title: Credit Controller}}\n"
        "  other: {company: C}\n",
        encoding="utf-8",
    )
    # When each tenant's sender is loaded, Then each has its signatory, its title in the letter's language
    default, uk, other = load_sender(path), load_sender(path, "uk"), load_sender(path, "other")
    assert default.to_context("fr")["signatory"] == {"name": "Marie Durand", "title": "Responsable crédit"}
    assert default.to_context("en")["signatory"] == {"name": "Marie Durand", "title": "Credit Manager"}
    assert uk.to_context("fr")["signatory"] == {"name": "John Smith", "title": "Credit Controller"}
    assert other.signatory == default.signatory and other.company == "C"
    refuse_placeholder(path)  # a company's own signatory passes


@pytest.mark.parametrize(
    ("signatory", "error"),
    [
        ("{title: Manager}", "`signatory` needs a `name`"),
        ("{name: X, phone: 1}", "unknown signatory field"),
        ('{name: "X\\u2028Bcc: y@z.example"}', r"default\.signatory\.name .* relance refuses them"),
        ('{name: X, title: {fr: "=?utf-8?q?=0D=0A?="}}', r"default\.signatory\.title\.fr .* relance refuses them"),
    ],
)
def test_a_bad_signatory_stops_the_start_up(tmp_path: Path, signatory: str, error: str) -> None:
    path = tmp_path / "sender.yaml"
    path.write_text(f"default: {{company: A, signatory: {signatory}}}\n", encoding="utf-8")
    with pytest.raises(ConfigurationError, match=error):
        load_sender(path)


def test_the_placeholder_signatory_is_refused_like_the_placeholder_company(tmp_path: Path) -> None:
    # Given a copy of the shipped file whose company and IBAN were changed but not the signatory
    path = tmp_path / "sender.yaml"
    shipped = (Path(__file__).parents[3] / "services" / "notifier" / "sender.yaml").read_text(encoding="utf-8")
    path.write_text(shipped.replace("Exemple Distribution SAS", "Martin SA").replace("FR76 0000", "FR76 1111"))
    # When the worker checks it, Then it refuses naming the signatory
    with pytest.raises(ConfigurationError, match="still has the placeholder signatory"):
        refuse_placeholder(path)


# ---------------------------------------------------------------------------------------------------- rates
def test_the_applied_rate_is_stated_where_interest_is_claimed() -> None:
    # Given a French-law reminder whose interest was computed at ECB 2.15 + 10 over two semesters at the same rate
    letter = text(sample_reminder("formal_notice", law="fr"))
    # Then the rate is stated once, in full, under the totals
    assert (
        f"Taux appliqué : taux de refinancement de la BCE de 2,15{NBSP}% majoré de 10 points, soit 12,15{NBSP}% l'an."
        in letter
    )
    assert letter.count("Taux appliqué") == 1
    english = text(sample_reminder("formal_notice", law="fr"), "en")
    assert "Rate applied: the ECB main refinancing rate of 2.15% plus 10 points, i.e. 12.15% a year." in english


def test_several_rates_are_stated_per_period() -> None:
    # Given interest computed over three semesters at three rates
    data = sample_reminder("formal_notice", law="fr")
    data["rates"] = [
        {"from_date": "2024-07-01", "reference": "4.25", "margin": "10", "rate": "14.25"},
        {"from_date": "2025-01-01", "reference": "3.15", "margin": "10", "rate": "13.15"},
        {"from_date": "2025-07-01", "reference": "2.15", "margin": "10", "rate": "12.15"},
    ]
    # When rendered, Then each period is stated with its dates, the last one open-ended
    letter = text(data)
    assert (
        "Taux appliqués :\n"
        f"- du 1er juillet 2024 au 31 décembre 2024 : taux de refinancement de la BCE de 4,25{NBSP}% "
        "majoré de 10 points, "
        f"soit 14,25{NBSP}% l'an\n"
        f"- du 1er janvier 2025 au 30 juin 2025 : taux de refinancement de la BCE de 3,15{NBSP}% majoré de 10 points, "
        f"soit 13,15{NBSP}% l'an\n"
        f"- à compter du 1er juillet 2025 : taux de refinancement de la BCE de 2,15{NBSP}% majoré de 10 points, "
        f"soit 12,15{NBSP}% l'an\n"
    ) in letter
    uk = sample_reminder("formal_notice", law="uk")
    assert (
        "Rates applied:\n"
        "- from 1 January 2026 to 30 June 2026: the Bank of England base rate of 4% plus 8 points, i.e. 12% a year\n"
        "- from 1 July 2026: the Bank of England base rate of 3.75% plus 8 points, i.e. 11.75% a year\n"
    ) in text(uk, "en")


def test_a_contractual_rate_is_stated_as_such() -> None:
    data = sample_reminder("formal_notice", law="fr")
    data["rates"] = [{"from_date": "2026-01-01", "rate": "15"}]
    assert f"Taux appliqué : taux contractuel de 15{NBSP}% l'an." in text(data)
    assert "Rate applied: the contractual rate of 15% a year." in text(data, "en")


def test_no_rate_is_stated_when_no_interest_is_claimed() -> None:
    data = sample_reminder("formal_notice", law="fr", charges=False)
    data["claims"] = [c for c in data["claims"] if c["kind"] != "interest"]
    assert "Taux" not in text(data) and "Rate" not in text(data, "en")


# --------------------------------------------------------------------------------------------------- totals
def test_without_charges_the_total_is_printed_once() -> None:
    for language, total, principal in (
        ("fr", "Total à régler", "restant dû :"),
        ("en", "Total to pay", "outstanding:"),
    ):
        letter = text(sample_reminder("reminder_2", charges=False), language)
        assert (
            letter.count(total) == 1
            and principal not in letter
            and letter.count("1\u202f234,56") + letter.count("1,234.56") == 3
        )  # the amount and the outstanding of the line, and the one total


def test_with_charges_each_total_is_printed_once_and_adds_up() -> None:
    letter = text(sample_reminder("reminder_2"))
    expected = (
        f"Principal restant dû : 1{NNBSP}234,56{NBSP}€\n"
        f"Pénalités de retard : 12,34{NBSP}€\n"
        f"Indemnité forfaitaire pour frais de recouvrement : 40,00{NBSP}€\n"
        f"Total à régler : 1{NNBSP}286,90{NBSP}€\n"
    )
    assert expected in letter
    for label in ("Principal restant dû", "Pénalités de retard :", "Indemnité forfaitaire pour", "Total à régler"):
        assert letter.count(label) == 1, label


# ------------------------------------------------------------------------------------- also, claims, currency
def test_also_outstanding_refers_to_the_earlier_letter_and_is_not_demanded() -> None:
    # Given a formal notice for one invoice, another overdue invoice already sent its formal notice on 3 October
    data = sample_reminder("formal_notice", law="fr")
    rendered = render(data, PROFILE, TEAM, "fr")
    # Then that invoice is listed apart, at its own level, by the date and reference of its notice
    assert (
        "Par ailleurs, les factures suivantes restent impayées ; "
        "elles ne sont pas comprises dans le montant ci-dessus :\n"
        f"- Facture F-2026-0003 du 1er août 2026, échéance le 1er septembre 2026 : reste dû 500,00{NBSP}€, "
        f"80{NBSP}jours de retard\n"
        "  déjà réclamée par notre mise en demeure du 3 octobre 2026 (réf. esc-sample-fn)\n"
    ) in rendered.text
    assert "déjà réclamée par notre mise en demeure du 3 octobre 2026 (réf. esc-sample-fn)</li>" in rendered.html
    # And the amount demanded leaves it out: 1234.56 + 12.34 + 40 + the claims 8.10 + 40
    assert f"la somme de 1{NNBSP}335,00{NBSP}€ dans un délai de huit jours" in rendered.text
    assert f"Total à régler : 1{NNBSP}335,00{NBSP}€" in rendered.text
    assert (
        "Il comprend également les pénalités et indemnités restant dues sur des factures déjà réglées" in rendered.text
    )
    english = text(data, "en")
    assert "already requested in our formal notice of 3 October 2026 (ref. esc-sample-fn)" in english
    assert "It also includes the interest and compensation still owed on invoices already paid" in english
    assert "Il comprend également" not in text(sample_reminder("formal_notice"))  # no claims, no sentence


def test_a_demanded_line_refers_to_the_last_letter_that_asked_for_it() -> None:
    data = sample_reminder("formal_notice", law="fr")
    data["lines"][0]["notices"] = [
        {"level": "courtesy", "reminder_id": "esc-c", "on": "2026-10-25"},
        {"level": "reminder_1", "reminder_id": "esc-r1", "on": "2026-11-05"},
        {"level": "reminder_2", "reminder_id": "esc-r2", "on": "2026-11-12"},
    ]
    letter = text(data)
    assert "  déjà réclamée par notre second rappel du 12 novembre 2026 (réf. esc-r2)\n" in letter
    assert "esc-r1" not in letter and "esc-c" not in letter
    data["lines"][0]["notices"] = [{"level": "courtesy", "reminder_id": "esc-c", "on": "2026-10-25"}]
    assert "esc-c" not in text(data) and "par notre avis" not in text(data)  # an advance notice asked for nothing


def test_claims_on_paid_invoices_are_listed_and_included_in_the_total() -> None:
    data = sample_reminder("reminder_2", law="fr")
    letter = text(data)
    assert (
        "Sommes restant dues sur des factures déjà réglées :\n"
        f"- Facture F-2026-0002 : pénalités de retard 8,10{NBSP}€\n"
        f"- Facture F-2026-0002 : indemnité forfaitaire 40,00{NBSP}€\n"
    ) in letter
    assert f"Sommes dues sur factures réglées : 48,10{NBSP}€\nTotal à régler : 1{NNBSP}335,00{NBSP}€\n" in letter
    # a reminder whose totals lost `claims` (recomputed over its lines) still adds the claims it lists
    del data["totals"]["claims"]
    assert f"Total à régler : 1{NNBSP}335,00{NBSP}€\n" in text(data)


def test_a_claim_alone_makes_a_demand() -> None:
    # Given a reminder for claims only: no interest nor fee on its lines
    data = sample_reminder("reminder_2", law="uk", charges=False)
    letter = text(data, "en")
    assert "Principal outstanding: £1,234.56\nOwed on paid invoices: £48.10\nTotal to pay: £1,282.66\n" in letter
    assert "Rate applied" in letter or "Rates applied" in letter  # the interest claimed was computed at a rate


def test_a_fee_in_another_currency_is_shown_in_it_and_totalled_apart() -> None:
    # Given a USD invoice under French law: the EUR 40 indemnity is in euros (on the line and on a paid invoice)
    data = sample_reminder("formal_notice", law="fr", currency="USD")
    rendered = render(data, PROFILE, TEAM, "fr")
    letter = rendered.text
    # Then each amount is in its currency, the USD total adds no euro, and the euros are totalled on their own
    assert f"pénalités de retard 12,34{NBSP}$US, indemnité forfaitaire 40,00{NBSP}€\n" in letter
    assert f"Total à régler : 1{NNBSP}255,00{NBSP}$US\n" in letter  # 1234.56 + 12.34 + 8.10, no euro in it
    assert (
        f"À régler en outre, en EUR : 80,00{NBSP}€ "
        f"(indemnité forfaitaire 40,00{NBSP}€, sur factures réglées 40,00{NBSP}€)\n" in letter
    )
    assert "Indemnité forfaitaire pour frais de recouvrement :" not in letter  # no euro line among the dollar totals
    assert f"la somme de 1{NNBSP}255,00{NBSP}$US et 80,00{NBSP}€ dans un délai" in letter
    assert "Also to pay, in EUR: €80.00" in text(data, "en")


def test_the_pay_link_is_for_the_amount_in_the_reminder_s_currency() -> None:
    data = {**sample_reminder("formal_notice", law="fr", currency="USD"), "customer_id": "C-1"}
    sender = Sender(company="A", pay_url="https://pay/{customer}?c={currency}&a={amount}")
    assert "https://pay/C-1?c=USD&a=1255.00" in render(data, PROFILE, sender, "fr").text


# ------------------------------------------------------------------------------------------------------ law
@pytest.mark.parametrize("language", LANGUAGES)
@pytest.mark.parametrize("template", TEMPLATES)
def test_a_uk_letter_cites_the_1998_act_and_no_french_law(template: str, language: str) -> None:
    rendered = render(sample_reminder(template, law="uk"), PROFILE, SIGNED, language)
    for part in (rendered.text, rendered.html):
        for french in ("L441", "D441", "Code de commerce", "Commercial Code", "Code civil", "Civil Code", "1344",
                       "BCE", "ECB", "European Central Bank", "Banque centrale", "2011/7"):  # fmt: skip
            assert french not in part, french
        assert language == "fr" or "mise en demeure" not in part  # in French, the plain word for a formal notice
        if template != "courtesy":
            assert "Late Payment of Commercial Debts (Interest) Act 1998" in part
    assert "£" in rendered.text


def test_a_uk_formal_notice_gives_14_days_and_states_the_fixed_sums() -> None:
    letter = text(sample_reminder("formal_notice", law="uk"), "en")
    assert "formal notice to pay the sum of £1,365.00 within 14 days of the date of this letter." in letter
    assert "statutory interest £12.34, fixed-sum compensation £70.00" in letter
    assert "£40 for a debt under £1,000, £70 from £1,000 to £9,999.99, and £100 from £10,000" in letter


@pytest.mark.parametrize("language", LANGUAGES)
def test_an_eu_letter_cites_the_directive_not_the_french_codes(language: str) -> None:
    letter = text(sample_reminder("formal_notice", law="eu"), language)
    assert "2011/7/UE" in letter or "2011/7/EU" in letter
    assert "au moins 8 points" in letter or "at least 8 percentage points" in letter
    assert "L441-10" not in letter and "1344" not in letter


@pytest.mark.parametrize("language", LANGUAGES)
@pytest.mark.parametrize("law", [None, "fr"])
def test_a_french_formal_notice_cites_l441_10_d441_5_and_1344(law: str | None, language: str) -> None:
    data = sample_reminder("formal_notice", law=law) if law else sample_reminder("formal_notice")
    letter = text(data, language)
    assert "L441-10" in letter and "D441-5" in letter and "1344" in letter


@pytest.mark.parametrize("language", LANGUAGES)
@pytest.mark.parametrize("law", LAWS)
@pytest.mark.parametrize("template", ["courtesy", "reminder_1"])
def test_courtesy_and_first_reminder_stay_courteous(template: str, law: str, language: str) -> None:
    letter = text(sample_reminder(template, law=law), language).lower()
    for threat in THREATS:
        assert threat not in letter, threat


def test_an_unknown_law_is_refused_not_rendered_as_french() -> None:
    with pytest.raises(ConfigurationError, match="unknown law 'de'"):
        text({**sample_reminder("formal_notice", law="fr"), "law": "de"})


# ----------------------------------------------------------------------------------------- old reminders, data
def test_a_reminder_of_the_previous_version_renders_as_a_french_law_letter() -> None:
    # Given a reminder recorded before lines had levels and notices, before also/claims/law/rates/fee_currency
    data = sample_reminder("reminder_2", charges=False)
    assert not {"also", "claims", "law", "rates"} & set(data) and not {"level", "notices"} & set(data["lines"][0])
    # When rendered today, Then it is the letter it was, with the dates, plurals and totals that read right
    assert text(data) == (
        "À l'attention de Claire Martin\nBoulangeries Martin SAS\n\nLe 20 novembre 2026\nRéf. : sample\n\n"
        "Madame, Monsieur,\n\nMalgré notre précédent rappel, les factures ci-dessous demeurent impayées.\n\n"
        "Nous vous demandons de régulariser cette situation sous huit jours. Si un désaccord ou une difficulté "
        "explique ce retard, contactez-nous sans attendre afin que nous trouvions ensemble une solution.\n\n"
        "Factures concernées (EUR) :\n"
        f"- Facture F-2026-0001 du 1er octobre 2026, échéance le 31 octobre 2026 : montant 1{NNBSP}234,56{NBSP}€, "
        f"reste dû 1{NNBSP}234,56{NBSP}€, 20{NBSP}jours de retard\n\n"
        f"Total à régler : 1{NNBSP}234,56{NBSP}€\n\n"
        "Merci d'effectuer votre règlement par virement sur le compte FR76 1234, en rappelant les numéros de "
        "facture en référence.\n\n"
        "Si vous avez réglé ces sommes entre-temps, merci de ne pas tenir compte de ce message.\n\n"
        "Pour toute question sur ces factures, contactez-nous : ar@d.fr.\n\n"
        "Veuillez agréer, Madame, Monsieur, l'expression de nos salutations distinguées.\n\n"
        "Le service comptabilité clients\nFournitures Durand SA\n3 quai Est\n69002 Lyon\n\n"
        "Conformément à l'article L441-10 du Code de commerce, tout retard de paiement fait courir de plein droit "
        "des pénalités de retard au taux de refinancement de la Banque centrale européenne majoré de 10 points, "
        "ainsi qu'une indemnité forfaitaire pour frais de recouvrement de 40 euros (article D441-5 du Code de "
        "commerce).\n"
    )
    english = text(sample_reminder("formal_notice"), "en")
    assert "Article L441-10 of the French Commercial Code" in english and "Article 1344" in english
    assert "Sent by" not in english and "registered" not in english


def test_erp_values_in_the_new_fields_stay_data() -> None:
    # Given template code and markup in an "also" invoice number, a claim's invoice number and a notice reference
    data = sample_reminder("formal_notice", law="fr")
    data["also"][0]["number"] = "<b>A-1</b>{{ 7*7 }}"
    data["claims"][0]["number"] = "{% if 1 %}C-1{% endif %}<i>"
    data["also"][0]["notices"][-1]["reminder_id"] = "<script>x</script>{{ 6*7 }}"
    # When rendered, Then nothing is evaluated, the text keeps them literally and the HTML escapes them once
    rendered = render(data, PROFILE, TEAM, "fr")
    assert "49" not in rendered.text and "42" not in rendered.text
    assert (
        "Facture <b>A-1</b>{{ 7*7 }} du" in rendered.text and "Facture {% if 1 %}C-1{% endif %}<i> :" in rendered.text
    )
    assert "(réf. <script>x</script>{{ 6*7 }})" in rendered.text
    assert "&lt;b&gt;A-1&lt;/b&gt;{{ 7*7 }}" in rendered.html and "{% if 1 %}C-1{% endif %}&lt;i&gt;" in rendered.html
    assert "(réf. &lt;script&gt;x&lt;/script&gt;{{ 6*7 }})" in rendered.html and "<script>" not in rendered.html
    assert "&amp;lt;" not in rendered.html


def test_a_notice_reference_that_could_forge_a_header_is_refused() -> None:
    data = sample_reminder("formal_notice", law="fr")
    data["also"][0]["notices"][0]["reminder_id"] = "R =?utf-8?q?=0D=0ABcc:_x@y.example?="
    with pytest.raises(UnsafeHeaderText, match="the reference of an earlier reminder"):
        text(data)


# ------------------------------------------------------------------------------------------------- start-up
@pytest.mark.parametrize(
    ("source", "line"),
    [
        # breaks only on a reminder with claims: the start-up tries one
        ('{% extends "fr/_layout.txt" %}\n{% block intro %}\n{% if claims %}\n{{ claims[0].nope }}\n{% endif %}\n'
         "{% endblock %}\n", 4),
        # breaks only under English law
        ('{% extends "fr/_layout.txt" %}\n{% block intro %}\n{% if law == "uk" %}\n{{ act_name }}\n{% endif %}\n'
         "{% endblock %}\n", 4),
        # breaks only on a registered letter whose lines were reminded before
        ('{% extends "fr/_layout.txt" %}\n{% block intro %}\n{% if registered and lines[0].last_notice %}\n'
         "{{ lines[0].last_notice.date }}\n{% endif %}\n{% endblock %}\n", 4),
    ],
)  # fmt: skip
def test_a_template_broken_only_by_the_new_fields_stops_the_start_up(tmp_path: Path, source: str, line: int) -> None:
    (tmp_path / "fr").mkdir()
    path = tmp_path / "fr" / "formal_notice.txt"
    path.write_text(source, encoding="utf-8")
    with pytest.raises(ConfigurationError, match=rf"{re.escape(str(path))}:{line}: UndefinedError"):
        load_templates(tmp_path)


@pytest.mark.parametrize("language", LANGUAGES)
@pytest.mark.parametrize("template", LEVEL_TEMPLATES)
@pytest.mark.parametrize("law", LAWS)
def test_every_level_renders_in_both_languages_under_each_law(template: str, language: str, law: str) -> None:
    rendered = render(sample_reminder(template, law=law), PROFILE, SIGNED, language, load_templates())
    assert "F-2026-0001" in rendered.text and "F-2026-0003" in rendered.text and "F-2026-0002" in rendered.text
    assert "F-2026-0001" in rendered.html and "F-2026-0003" in rendered.html and "F-2026-0002" in rendered.html
    assert "Marie Durand" in rendered.text and rendered.subject and "\n" not in rendered.subject


# ---------------------------------------------------------------------------------------------------- claims statement
STATEMENT_BASIS = {
    ("fr", "fr"): "les sommes que prévoient les articles L441-10 et D441-5 du Code de commerce",
    ("fr", "eu"): "les sommes que prévoit la directive 2011/7/UE",
    ("fr", "uk"): "les sommes que prévoit le Late Payment of Commercial Debts (Interest) Act 1998",
    ("en", "fr"): "the sums Articles L441-10 and D441-5 of the French Commercial Code provide for late payment",
    ("en", "eu"): "the sums Directive 2011/7/EU provides for late payment",
    ("en", "uk"): "the sums the Late Payment of Commercial Debts (Interest) Act 1998 provides for late payment",
}
LEGAL_MENTION = {"fr": "L441-10", "eu": "2011/7", "uk": "Late Payment of Commercial Debts (Interest) Act 1998"}


@pytest.mark.parametrize("language", LANGUAGES)
@pytest.mark.parametrize("law", LAWS)
def test_a_claims_statement_says_when_each_invoice_was_paid_what_remains_due_and_the_law(
    law: str, language: str
) -> None:
    # Given a claims statement: no invoice demanded, the interest and the indemnity of a paid invoice
    data = sample_reminder("claims", law=law)
    assert data["lines"] == [] and "also" not in data
    rendered = render(data, PROFILE, SIGNED, language, load_templates())
    flat = " ".join(rendered.text.split())
    html = " ".join(rendered.html.split())
    currency = "£" if law == "uk" else "€"
    # Then it says, per invoice, the day it was paid and how late, and what remains due, with the total
    if language == "fr":
        sign = f" {currency}GB" if law == "uk" else f" {currency}"
        assert (
            "La facture F-2026-0002 a été réglée le 12 novembre 2026, avec 12 jours de retard ; reste à régler :"
            in flat
        )
        assert f"8,10{sign}" in flat and f"40,00{sign}" in flat and f"Total à régler : 48,10{sign}" in flat
        assert "Factures concernées" not in flat and "Ce relevé ne sera pas renouvelé" in flat
        assert rendered.subject.startswith("Relevé des sommes restant dues sur factures réglées")
    else:
        assert "Invoice F-2026-0002 was paid on 12 November 2026, 12 days late; still due:" in flat
        assert f"{currency}8.10" in flat and f"{currency}40.00" in flat and f"Total to pay: {currency}48.10" in flat
        assert "Invoices concerned" not in flat and "This statement will not be repeated" in flat
        assert rendered.subject.startswith("Statement of sums still due on paid invoices")
    # And the law's wording, its rate stated, its legal mention; the same in the HTML part
    assert STATEMENT_BASIS[(language, law)] in flat and LEGAL_MENTION[law] in flat
    rate = {"fr": "12.15", "eu": "10.15", "uk": "11.75"}[law]  # the reference rate plus the law's margin
    assert (rate.replace(".", ",") + " %" if language == "fr" else rate + "%") in flat
    assert "F-2026-0002" in html and ("12 novembre 2026" if language == "fr" else "12 November 2026") in html
    # Courteous but clear: no threat
    assert not [word for word in THREATS if word in flat.lower()]


def test_a_claims_statement_in_dollars_totals_the_euro_indemnity_apart() -> None:
    # Given a USD invoice paid late under French law: its interest in dollars, the EUR 40 in euros
    rendered = render(sample_reminder("claims", law="fr", currency="USD"), PROFILE, SIGNED, "en", load_templates())
    flat = " ".join(rendered.text.split())
    assert "late-payment interest US$8.10, fixed recovery indemnity €40.00." in flat
    assert "Total to pay: US$8.10" in flat and "Also to pay, in EUR: €40.00" in flat
