"""The workspace's two languages: French and English, chosen by ``?lang=``, then the ``relance_lang`` cookie, then
the browser's ``Accept-Language``; numbers, money and dates written the locale's way by Babel.

Money is always shown with its currency, and amounts of different currencies are never added up.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal, InvalidOperation

from babel.dates import format_date, format_datetime
from babel.numbers import format_currency, format_decimal
from fastapi import Request

LANGUAGES = ("en", "fr")
DEFAULT = "en"
COOKIE = "relance_lang"

MESSAGES: dict[str, dict[str, str]] = {
    "agenda": {"fr": "Agenda", "en": "Agenda"},
    "customers": {"fr": "Clients", "en": "Customers"},
    "outbox": {"fr": "Commandes en attente", "en": "Outbox"},
    "dead_letters": {"fr": "Lettres mortes", "en": "Dead letters"},
    "letters": {"fr": "Courriers", "en": "Letters"},
    "letter_pdf": {"fr": "PDF", "en": "PDF"},
    "letter_is_rendered": {"fr": "éditée", "en": "rendered"},
    "letter_is_printed": {"fr": "imprimée", "en": "printed"},
    "letter_is_posted": {"fr": "postée", "en": "posted"},
    "letter_is_delivered": {"fr": "distribuée", "en": "delivered"},
    "letter_is_returned": {"fr": "retournée", "en": "returned"},
    "posted_on": {"fr": "postée le {day}", "en": "posted on {day}"},
    "tracking": {"fr": "suivi {number}", "en": "tracking {number}"},
    "delivered_on": {"fr": "distribuée le {day}", "en": "delivered on {day}"},
    "returned_on": {"fr": "retournée le {day} : {reason}", "en": "returned on {day}: {reason}"},
    "sign_out": {"fr": "Se déconnecter", "en": "Sign out"},
    "agenda_of": {"fr": "Agenda du {day}", "en": "Agenda for {day}"},
    "items": {
        "fr": "{n} action(s), les plus gros montants en jeu d'abord",
        "en": "{n} item(s), largest amount at risk first",
    },
    "nothing_to_do": {"fr": "Rien à faire aujourd'hui.", "en": "Nothing to do today."},
    "mine": {"fr": "Les miennes", "en": "Mine"},
    "team": {"fr": "L'équipe", "en": "My team"},
    "all_kinds": {"fr": "Tous les types", "en": "All kinds"},
    "filter": {"fr": "Filtrer", "en": "Filter"},
    "at_risk": {"fr": "En jeu", "en": "At risk"},
    "since": {"fr": "Depuis", "en": "Since"},
    "what": {"fr": "Quoi", "en": "What"},
    "invoice": {"fr": "Facture", "en": "Invoice"},
    "invoices": {"fr": "Factures", "en": "Invoices"},
    "customer": {"fr": "Client", "en": "Customer"},
    "balance": {"fr": "Solde", "en": "Balance"},
    "overdue": {"fr": "Échu", "en": "Overdue"},
    "claims_owed": {"fr": "Pénalités dues", "en": "Claims owed"},
    "unallocated": {"fr": "Crédit non affecté", "en": "Unallocated credit"},
    "summary": {"fr": "Situation du compte", "en": "Account summary"},
    "open_invoices": {"fr": "Factures ouvertes", "en": "Open invoices"},
    "number": {"fr": "Numéro", "en": "Number"},
    "due": {"fr": "Échéance", "en": "Due"},
    "amount": {"fr": "Montant", "en": "Amount"},
    "outstanding": {"fr": "Restant dû", "en": "Outstanding"},
    "level": {"fr": "Niveau", "en": "Level"},
    "next_step": {"fr": "Prochaine étape", "en": "Next step"},
    "interest": {"fr": "Intérêts", "en": "Interest"},
    "fees": {"fr": "Indemnités", "en": "Fees"},
    "no_level": {"fr": "aucun", "en": "none"},
    "disputed": {"fr": "en litige", "en": "disputed"},
    "promises": {"fr": "Promesses de paiement", "en": "Promises to pay"},
    "plans": {"fr": "Échéanciers", "en": "Payment plans"},
    "block": {"fr": "Blocage du crédit", "en": "Credit block"},
    "pause": {"fr": "Pause des relances", "en": "Reminders paused"},
    "paused_until": {
        "fr": "Relances en pause jusqu'au {day}",
        "en": "Reminders paused until {day}",
    },
    "blocked_since": {"fr": "Crédit bloqué depuis le {day}", "en": "Credit blocked since {day}"},
    "days_late": {"fr": "{n} j de retard", "en": "{n} days late"},
    "timeline": {"fr": "Historique", "en": "Timeline"},
    "actions": {"fr": "Actions", "en": "Actions"},
    "open_email": {"fr": "Voir l'e-mail", "en": "Open the e-mail"},
    "tasks": {"fr": "Tâches ouvertes", "en": "Open tasks"},
    "none": {"fr": "Aucun", "en": "None"},
    "search": {"fr": "Rechercher", "en": "Search"},
    "name": {"fr": "Nom", "en": "Name"},
    "email": {"fr": "E-mail envoyé", "en": "E-mail as sent"},
    "verdict_ok": {
        "fr": "Intact : l'empreinte SHA-256 des octets conservés est celle que l'historique a enregistrée.",
        "en": "Intact: the SHA-256 of the kept bytes is the one the stream recorded.",
    },
    "verdict_bad": {
        "fr": "Altéré ou non vérifiable : l'empreinte ne correspond pas à l'historique.",
        "en": "Altered or unverifiable: the hash does not match the stream.",
    },
    "download_eml": {"fr": "Télécharger le .eml", "en": "Download the .eml"},
    "headers": {"fr": "En-têtes", "en": "Headers"},
    "body": {"fr": "Texte", "en": "Text"},
    "submit": {"fr": "Enregistrer", "en": "Save"},
    "cancel": {"fr": "Annuler", "en": "Cancel"},
    "back": {"fr": "Retour au client", "en": "Back to the customer"},
    "not_found": {"fr": "Page introuvable", "en": "Not found"},
    "not_found_text": {
        "fr": "Cette page n'existe pas, ou vous n'y avez pas accès.",
        "en": "This page does not exist, or you have no access to it.",
    },
    "forbidden": {"fr": "Action non autorisée", "en": "Not allowed"},
    "error": {"fr": "Erreur", "en": "Error"},
    "command": {"fr": "Commande", "en": "Command"},
    "kind": {"fr": "Type", "en": "Kind"},
    "created": {"fr": "Créée", "en": "Created"},
    "attempts": {"fr": "Tentatives", "en": "Attempts"},
    "last_error": {"fr": "Dernière erreur", "en": "Last error"},
    "empty": {"fr": "Rien ici.", "en": "Nothing here."},
    "language": {"fr": "English", "en": "Français"},
    "recorded": {"fr": "Enregistré", "en": "Recorded"},
    "by": {"fr": "par", "en": "by"},
    "with_promise": {"fr": "Le client promet un paiement", "en": "The customer promises a payment"},
    "promised_date": {"fr": "Date promise", "en": "Promised date"},
    "currency": {"fr": "Devise", "en": "Currency"},
    "outcome": {"fr": "Résultat", "en": "Outcome"},
    "note": {"fr": "Note", "en": "Note"},
    "next_action_on": {"fr": "Prochaine action le", "en": "Next action on"},
    "contact": {"fr": "Interlocuteur", "en": "Contact"},
    "step_disputed": {"fr": "en attente : litige", "en": "on hold: disputed"},
    "step_plan": {"fr": "échéance de {amount} le {day}", "en": "plan instalment of {amount} on {day}"},
    "step_promise": {"fr": "promis pour le {day}", "en": "promised for {day}"},
    "step_task": {"fr": "{what} depuis le {day}", "en": "{what} since {day}"},
    "step_policy": {"fr": "niveau suivant de la politique à son heure", "en": "the policy's next level when due"},
    "show_all_events": {"fr": "Afficher aussi les passages de l'horloge", "en": "Show the clock ticks too"},
    "more_tasks": {"fr": "{n} autre(s) tâche(s)", "en": "{n} more task(s)"},
    "mark_done": {"fr": "Fait", "en": "Done"},
    "open": {"fr": "Ouvrir", "en": "Open"},
    "more_actions": {"fr": "Autres actions", "en": "More actions"},
    "done": {"fr": "Action enregistrée", "en": "Recorded"},
    "jobs": {"fr": "Tâches de fond", "en": "Jobs"},
    "start_job": {"fr": "Lancer", "en": "Start a job"},
    "start": {"fr": "Lancer", "en": "Start"},
    "status": {"fr": "État", "en": "Status"},
    "progress": {"fr": "Avancement", "en": "Progress"},
    "requested_by": {"fr": "Demandée par", "en": "Asked by"},
    "result": {"fr": "Résultat ou motif", "en": "Result or reason"},
    "job_queued": {"fr": "en attente", "en": "queued"},
    "job_running": {"fr": "en cours", "en": "running"},
    "job_done": {"fr": "terminée", "en": "done"},
    "job_failed": {"fr": "échouée", "en": "failed"},
}

FIELD_LABELS: dict[str, dict[str, str]] = {
    "field_outcome": {"fr": "Résultat", "en": "Outcome"},
    "field_note": {"fr": "Note", "en": "Note"},
    "field_text": {"fr": "Texte", "en": "Text"},
    "field_contact": {"fr": "Interlocuteur", "en": "Contact"},
    "field_next_action_on": {"fr": "Prochaine action le", "en": "Next action on"},
    "field_task_id": {"fr": "Tâche concernée", "en": "Task it answers"},
    "field_promised_date": {"fr": "Date promise", "en": "Promised date"},
    "field_amount": {"fr": "Montant", "en": "Amount"},
    "field_currency": {"fr": "Devise", "en": "Currency"},
    "field_invoice_ids": {"fr": "Factures", "en": "Invoices"},
    "field_invoice_id": {"fr": "Facture", "en": "Invoice"},
    "field_reason": {"fr": "Motif", "en": "Reason"},
    "field_resolution": {"fr": "Solution", "en": "Resolution"},
    "field_until": {"fr": "Jusqu'au", "en": "Until"},
    "field_assignee": {"fr": "Attribuer à (identifiant)", "en": "Assign to (login)"},
    "field_instalments": {
        "fr": "Échéances (date montant, une par ligne)",
        "en": "Instalments (date amount, one a line)",
    },
    "field_send_confirmation": {"fr": "Envoyer la confirmation au client", "en": "Send the customer a confirmation"},
    "field_kind": {"fr": "Pénalité", "en": "Claim"},
    "field_decision": {"fr": "Décision", "en": "Decision"},
    "field_proposal_id": {"fr": "Proposition", "en": "Proposal"},
}

ACTION_TITLES: dict[str, dict[str, str]] = {
    "log_call": {"fr": "Noter un appel", "en": "Log a call"},
    "add_note": {"fr": "Ajouter une note", "en": "Add a note"},
    "record_promise": {"fr": "Promesse de paiement", "en": "Record a promise"},
    "open_dispute": {"fr": "Ouvrir un litige", "en": "Open a dispute"},
    "resolve_dispute": {"fr": "Clore un litige", "en": "Resolve a dispute"},
    "agree_plan": {"fr": "Accorder un échéancier", "en": "Agree a payment plan"},
    "waive_claim": {"fr": "Renoncer à une pénalité", "en": "Waive a claim"},
    "letter_posted": {"fr": "Lettre postée", "en": "Letter posted"},
    "letter_delivered": {"fr": "Lettre distribuée", "en": "Letter delivered"},
    "letter_returned": {"fr": "Lettre retournée", "en": "Letter returned"},
    "pause": {"fr": "Suspendre les relances", "en": "Pause reminders"},
    "resume": {"fr": "Reprendre les relances", "en": "Resume reminders"},
    "propose_credit_limit": {"fr": "Proposer un encours", "en": "Propose a credit limit"},
    "decide_credit_limit": {"fr": "Décider d'un encours", "en": "Decide a credit limit"},
    "complete_task": {"fr": "Terminer la tâche", "en": "Complete the task"},
    "snooze_task": {"fr": "Reporter la tâche", "en": "Snooze the task"},
    "assign_task": {"fr": "Attribuer la tâche", "en": "Assign the task"},
}

KIND_TITLES: dict[str, dict[str, str]] = {
    "phone_call": {"fr": "appel", "en": "phone call"},
    "follow_up": {"fr": "rappel prévu", "en": "follow-up"},
    "check_promise": {"fr": "promesse à vérifier", "en": "check promise"},
    "promise_due": {"fr": "promesse du jour", "en": "promise due"},
    "promise_broken": {"fr": "promesse non tenue", "en": "promise broken"},
    "credit_blocked": {"fr": "crédit bloqué", "en": "credit blocked"},
    "hand_over": {"fr": "transmission au recouvrement", "en": "hand over"},
    "send_letter": {"fr": "lettre à poster", "en": "send letter"},
    "postal_address_missing": {"fr": "adresse postale manquante", "en": "postal address missing"},
    "payment_behaviour_changed": {"fr": "paie plus tard", "en": "paying later"},
    "claim_owed": {"fr": "pénalités dues", "en": "claims owed"},
    "fix_contact": {"fr": "contact à corriger", "en": "fix contact"},
    "check_delivery": {"fr": "remise à vérifier", "en": "check delivery"},
}

EVENT_TITLES: dict[str, tuple[str, str]] = {  # event type -> (English, French)
    "customer.upserted": ("Customer details from the ERP", "Fiche client reçue de l'ERP"),
    "invoice.issued": ("Invoice issued", "Facture émise"),
    "payment.received": ("Payment received", "Paiement reçu"),
    "invoice.due_date_passed": ("Due date passed", "Échéance dépassée"),
    "credit_note.issued": ("Credit note issued", "Avoir émis"),
    "invoice.cancelled": ("Invoice cancelled", "Facture annulée"),
    "invoice.disputed": ("Dispute opened", "Litige ouvert"),
    "invoice.dispute_resolved": ("Dispute resolved", "Litige clos"),
    "promise_to_pay.recorded": ("Promise to pay", "Promesse de paiement"),
    "payment_plan.agreed": ("Payment plan agreed", "Échéancier accordé"),
    "erp.command_acknowledged": ("The ERP answered a command", "Réponse de l'ERP à une commande"),
    "escalation.level_reached": ("Level reached", "Niveau atteint"),
    "interest.computed": ("Late interest computed", "Intérêts de retard calculés"),
    "fee.charged": ("Recovery fee charged", "Indemnité forfaitaire facturée"),
    "claim.fixed": ("Claim fixed", "Pénalité arrêtée"),
    "claim.waived": ("Claim waived", "Renonciation à une pénalité"),
    "reminder.requested": ("Reminder decided", "Relance décidée"),
    "collection.handed_over": ("Handed over to collection", "Transmis au recouvrement"),
    "credit.blocked": ("Credit blocked", "Crédit bloqué"),
    "credit.unblocked": ("Credit unblocked", "Crédit débloqué"),
    "task.created": ("Task created", "Tâche créée"),
    "escalation.clock_ticked": ("Clock tick", "Passage de l'horloge"),
    "reminder.sending": ("E-mail being sent", "E-mail en cours d'envoi"),
    "reminder.sent": ("E-mail sent", "E-mail envoyé"),
    "reminder.deferred": ("E-mail deferred", "E-mail différé"),
    "reminder.failed": ("E-mail failed", "E-mail en échec"),
    "reminder.unconfirmed": ("E-mail unconfirmed", "E-mail non confirmé"),
    "reminder.skipped": ("Reminder skipped", "Relance écartée"),
    "reminder.letter_requested": ("Letter to post", "Lettre à poster"),
    "letter.rendered": ("Letter rendered (PDF)", "Lettre éditée (PDF)"),
    "letter.handed_to_print": ("Letter printed", "Lettre imprimée"),
    "letter.posted": ("Letter posted", "Lettre postée"),
    "letter.delivered": ("Letter delivered", "Lettre distribuée"),
    "letter.returned": ("Letter returned", "Lettre retournée"),
    "command.dead_lettered": ("Command given up", "Commande abandonnée"),
    "task.completed": ("Task completed", "Tâche terminée"),
    "task.snoozed": ("Task snoozed", "Tâche reportée"),
    "task.assigned": ("Task assigned", "Tâche attribuée"),
    "call.logged": ("Call", "Appel"),
    "note.added": ("Note", "Note"),
    "customer.paused": ("Reminders paused", "Relances suspendues"),
    "customer.resumed": ("Reminders resumed", "Relances reprises"),
    "credit_limit.proposed": ("Credit limit proposed", "Encours proposé"),
    "credit_limit.approved": ("Credit limit approved", "Encours approuvé"),
    "credit_limit.rejected": ("Credit limit rejected", "Encours refusé"),
    "payment_plan.confirmation_requested": ("Plan confirmation to send", "Confirmation d'échéancier à envoyer"),
}

CALL_OUTCOME_TITLES: dict[str, dict[str, str]] = {
    "reached": {"fr": "joint", "en": "reached"},
    "no_answer": {"fr": "pas de réponse", "en": "no answer"},
    "wrong_contact": {"fr": "mauvais interlocuteur", "en": "wrong contact"},
    "promised": {"fr": "promesse de paiement", "en": "promised to pay"},
    "disputed": {"fr": "conteste", "en": "disputed"},
    "in_difficulty": {"fr": "en difficulté", "en": "in difficulty"},
}


def choose(request: Request) -> str:
    """The language of this request: ``?lang=``, the cookie, then the browser's preference, else English."""
    asked = request.query_params.get("lang") or request.cookies.get(COOKIE)
    if asked in LANGUAGES:
        return str(asked)
    header = request.headers.get("accept-language", "")
    ranked: list[tuple[float, str]] = []
    for part in header.split(","):
        tag, _, params = part.strip().partition(";")
        quality = 1.0
        if params.strip().startswith("q="):
            try:
                quality = float(params.strip()[2:])
            except ValueError:
                quality = 0.0
        ranked.append((quality, tag.strip().lower()[:2]))
    for _, tag in sorted(ranked, key=lambda r: -r[0]):
        if tag in LANGUAGES:
            return tag
    return DEFAULT


@dataclass(frozen=True)
class Translator:
    """The templates' ``t``, ``money``, ``number``, ``day`` and ``instant`` for one language."""

    lang: str

    @property
    def locale(self) -> str:
        return "fr_FR" if self.lang == "fr" else "en_GB"

    def __call__(self, key: str, **values: object) -> str:
        text = (MESSAGES.get(key) or FIELD_LABELS.get(key) or {}).get(self.lang) or key
        return text.format_map(_Blank(values)) if values else text

    def action(self, name: str) -> str:
        return ACTION_TITLES.get(name, {}).get(self.lang, name.replace("_", " "))

    def event(self, event_type: str) -> str:
        titles = EVENT_TITLES.get(event_type)
        return event_type if titles is None else titles[1 if self.lang == "fr" else 0]

    def kind(self, name: str) -> str:
        return KIND_TITLES.get(name, {}).get(self.lang, name.replace("_", " "))

    def outcome(self, name: str) -> str:
        return CALL_OUTCOME_TITLES.get(name, {}).get(self.lang, name.replace("_", " "))

    def money(self, amount: object, currency: str) -> str:
        value = _decimal(amount)
        if value is None:
            return ""
        if not currency:
            return format_decimal(value, locale=self.locale)
        try:
            return format_currency(value, currency, locale=self.locale)
        except (ValueError, KeyError):
            return f"{format_decimal(value, locale=self.locale)} {currency}"

    def number(self, value: object) -> str:
        found = _decimal(value)
        return "" if found is None else format_decimal(found, locale=self.locale)

    def day(self, value: date | str | None) -> str:
        if not value:
            return ""
        if isinstance(value, str):
            try:
                day = date.fromisoformat(value[:10])
            except ValueError:
                return value
        else:
            day = value
        return format_date(day, format="medium", locale=self.locale)

    def instant(self, value: datetime | None) -> str:
        if value is None:
            return ""
        return format_datetime(value, format="short", tzinfo=None, locale=self.locale) + " UTC"


class _Blank(dict[str, object]):
    """Values for a message: a placeholder no value was given for is left empty, never an error."""

    def __missing__(self, key: str) -> str:
        return ""


def _decimal(value: object) -> Decimal | None:
    if value is None or value == "":
        return None
    try:
        return value if isinstance(value, Decimal) else Decimal(str(value))
    except InvalidOperation:
        return None
