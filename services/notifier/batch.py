"""The day's print batch of letters: one PDF, an index page first, then each stored letter's pages unchanged.

:func:`make_batch` builds it from the letters rendered on a day and not yet printed (with ``again``, those printed
too), each checked against the SHA-256 its ``letter.rendered`` recorded; :func:`record_batch` then records
``letter.handed_to_print`` for each, once the batch is kept, so that a letter is never marked printed for a batch
nobody has. ``relance letters batch`` and the ``notifier.letters_batch`` job both do the two steps in that order.
"""

from __future__ import annotations

import hashlib
import html
import io
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime

from shared.contracts import events
from shared.ledger import letters as stored
from shared.ledger.dunning import Letter
from shared.ledger.store import Incoming, Ledger

PROGRESS_EVERY = 50  # letters between two progress lines


@dataclass(frozen=True, slots=True)
class Batched:
    """A print batch: its id, its bytes and their hash, and the letters it holds in order (with their first page)."""

    batch_id: str
    pdf: bytes
    sha256: str
    pages: int
    entries: list[tuple[stored.StoredLetter, Letter, int]]
    on: date


def make_batch(
    ledger: Ledger,
    on: date,
    tenants: list[str],
    *,
    again: bool = False,
    progress: Callable[[str], None] | None = None,
) -> Batched | None:
    """The print batch of the letters rendered ``on`` (those already printed only with ``again``); None when there
    is nothing to print. Nothing is recorded: :func:`record_batch` does, once the batch is kept."""
    from pypdf import PdfReader, PdfWriter

    chosen: list[tuple[stored.StoredLetter, Letter]] = []
    for tenant in tenants:
        found = stored.listed(ledger.engine, tenant, on=on)
        states = ledger.states(sorted({(tenant, letter.customer_id) for letter in found}))
        for letter in found:
            folded = states[tenant, letter.customer_id].letters.get(letter.letter_id)
            if folded is None:  # stored, but its facts never committed (a worker died between): not a letter yet
                continue
            if folded["status"] == "rendered" or (again and folded["status"] in ("rendered", "printed")):
                chosen.append((letter, folded))
    if not chosen:
        return None
    ids = "\n".join(f"{letter.tenant}\x1f{letter.letter_id}" for letter, _ in chosen)
    batch_id = "B-" + hashlib.sha256(f"{on.isoformat()}\n{ids}".encode()).hexdigest()[:16].upper()
    # The index is written twice: once to know how many pages it takes, then with the page each letter starts at.
    index_pages = len(PdfReader(io.BytesIO(_index_pdf(batch_id, on, chosen))).pages)
    starts: list[int] = []
    page = index_pages + 1
    for letter, _ in chosen:
        starts.append(page)
        page += letter.pages
    writer = PdfWriter()
    writer.append(PdfReader(io.BytesIO(_index_pdf(batch_id, on, chosen, starts))))
    pdfs: dict[tuple[str, str], stored.StoredLetter] = {}
    for tenant in sorted({letter.tenant for letter, _ in chosen}):
        wanted = [letter.letter_id for letter, _ in chosen if letter.tenant == tenant]
        pdfs.update(((tenant, k), v) for k, v in stored.read_all(ledger.engine, tenant, wanted).items())
    for count, (letter, folded) in enumerate(chosen, start=1):
        kept = pdfs[letter.tenant, letter.letter_id]
        if not stored.verify(kept, folded["sha256"]):
            raise BatchRefused(
                f"the stored PDF of letter {letter.letter_id} ({letter.tenant}) does not match the SHA-256 its "
                "letter.rendered recorded: nothing was printed; run `relance verify` and tell the auditor"
            )
        writer.append(PdfReader(io.BytesIO(kept.pdf)))
        if progress is not None and (count % PROGRESS_EVERY == 0 or count == len(chosen)):
            progress(f"relance: {count}/{len(chosen)} letters in the batch")
    out = io.BytesIO()
    writer.write(out)
    data = out.getvalue()
    sha256 = hashlib.sha256(data).hexdigest()
    entries = [(letter, folded, start) for (letter, folded), start in zip(chosen, starts, strict=True)]
    return Batched(batch_id, data, sha256, page - 1, entries, on)


def record_batch(ledger: Ledger, made: Batched, *, source: str) -> None:
    """``letter.handed_to_print`` for each letter of ``made``, once its bytes are kept (on disk, or a job's output).

    The event ids derive from the letter and the batch, so recording the same batch again (a job run again after a
    crash between the file and this) adds nothing.
    """
    batch_id, sha256, on = made.batch_id, made.sha256, made.on
    items = [
        Incoming.of(
            events.LetterHandedToPrint(
                letter_id=letter.letter_id, batch_id=batch_id, printed_on=on, batch_sha256=sha256
            ),
            stream=(letter.tenant, letter.customer_id),
            event_id="print-" + hashlib.sha256(f"{letter.letter_id}\x1f{batch_id}".encode()).hexdigest()[:32],
            occurred_at=datetime.now(UTC),
            metadata={"source": source},
        )
        for letter, _, _ in made.entries
    ]
    outcomes = ledger.record(items)
    refused = [o for o in outcomes if o.status not in ("applied", "duplicate")]
    if refused:
        raise BatchRefused(f"the ledger refused letter.handed_to_print: {refused[0].reason}")


class BatchRefused(RuntimeError):
    """The batch cannot be made: the message says why; nothing was recorded."""


def _index_pdf(
    batch_id: str, on: date, chosen: list[tuple[stored.StoredLetter, Letter]], starts: list[int] | None = None
) -> bytes:
    """The batch's index page(s): one row per letter, with the page it starts at in the batch."""
    from services.notifier.letters import to_pdf

    rows = []
    for n, (letter, folded) in enumerate(chosen):
        cells = [
            str(n + 1),
            letter.letter_id,
            letter.tenant,
            letter.customer_id,
            str(folded.get("level") or letter.kind),
            str(letter.pages),
            str(starts[n]) if starts else "",
        ]
        rows.append("<tr>" + "".join(f"<td>{html.escape(cell)}</td>" for cell in cells) + "</tr>")
    total = sum(letter.pages for letter, _ in chosen)
    page = f"""<!DOCTYPE html><html><head><meta charset="utf-8"><style>
@page {{ size: A4; margin: 15mm;
  @bottom-right {{ content: "index " counter(page) " / " counter(pages); font-family: "DejaVu Sans", sans-serif;
    font-size: 7pt; }} }}
body {{ font-family: "DejaVu Sans", sans-serif; font-size: 8.5pt; }}
table {{ width: 100%; border-collapse: collapse; }} th, td {{ text-align: left; border-bottom: 0.3pt solid #999;
padding: 1mm; overflow-wrap: anywhere; }} tr {{ page-break-inside: avoid; }}
</style></head><body>
<h1 style="font-size: 13pt;">Print batch {html.escape(batch_id)} — {on.isoformat()}</h1>
<p>{len(chosen)} letter(s), {total} page(s) after this index. Print single-sided, fold for a DL/C5 window envelope;
record each posting with <code>relance letters posted</code> (or the customer's page in the workspace).</p>
<table><thead><tr><th>#</th><th>letter</th><th>tenant</th><th>customer</th><th>level</th><th>pages</th>
<th>first page</th></tr></thead><tbody>{"".join(rows)}</tbody></table></body></html>"""
    return to_pdf(page).data
