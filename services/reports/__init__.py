"""Reports on the receivables for a credit manager and a credit committee: aged balance, DSO, the committee pack.

Every figure is read from the ledger's fold as of a day: the customer's state in the ``occurred`` reading at the end
of that day (the business view of that day, with everything known today: a payment received on the 30th and booked
on the 2nd counts on the 30th), through :mod:`shared.ledger.asof`. Amounts stay ``Decimal`` per currency from the
fold to the page and are never summed across currencies. Every report is a tenant's, and reads that tenant's streams
alone.

* :mod:`services.reports.walk` folds a stream once for several instants (a trend over month ends is one read);
* :mod:`services.reports.aging` is the aged balance, :mod:`services.reports.dso` the days sales outstanding,
  :mod:`services.reports.committee` the credit committee's pack;
* :mod:`services.reports.tables` lays the aged balance and the DSO out as tables; :mod:`services.reports.formats`
  writes any report as an aligned table, CSV, JSON or one self-contained HTML page (Jinja2 with autoescape: a
  customer's name is data, never markup), its charts placed by :mod:`services.reports.charts` as inline SVG.

The command line is :mod:`services.cli.reports` (``relance report ...``); ``relance demo`` writes the committee pack
of its first tenant with the same code.
"""
