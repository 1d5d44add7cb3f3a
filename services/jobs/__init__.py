"""Background jobs: the work people and schedules start that must not run inside a request or a CLI call.

An audit bundle, a committee report, a tenant's replay, the day's letter batch, a signed checkpoint, a re-send of
dead-lettered commands: each runs as a Dramatiq actor on RabbitMQ (``relance worker jobs``), or in-process on the
embedded default, and keeps its row in the ``jobs`` table (status, progress, result, the reason it failed), where
``relance jobs``, the workspace and the API read it. The pipeline (ingest, escalation, notifier, relay) is not made
of jobs: it is batched consumers, many items per transaction (see the README's "Background jobs").

- ``registry.py``: every kind, ``"<service>.<action>"``, its arguments' model, its function (by dotted path) and its
  time limit;
- ``service.py``: enqueue once (by job id), run once (claim the row, heartbeat, one statement for the outcome),
  retry what may pass, fail for good what cannot;
- ``store.py``: every statement on the ``jobs`` table;
- ``broker.py``: Dramatiq's broker (RabbitMQ with publisher confirms, or the stub broker in-process) and the actors;
- ``worker.py``: ``relance worker jobs``, with Dramatiq's Prometheus middleware;
- ``kinds.py``: the jobs whose work lives in ``shared/`` (``ledger.checkpoint``, ``relay.retry_dead``).

Adding a kind, e.g. ``reports.committee``:

1. in the service, a function ``committee(args, context) -> dict`` following :mod:`shared.contracts.jobs` (report
   progress with ``context.progress(done, total, note)``; raise ``JobRefused("why")`` for what a retry cannot fix;
   make it safe to run twice, since a worker may die between its effect and ``done``);
2. in ``registry.py``, a pydantic model of its arguments (``extra="forbid"``) and one line in :data:`KINDS`:
   ``Kind("reports.committee", "services.reports.jobs:committee", "the committee's report", CommitteeArgs,
   time_limit_seconds=1800)``;
3. in ``services/workspace/roles.py``, the roles that may start it (``"job:reports.committee"``).

The actor, its queue, its retries, the CLI (``relance jobs enqueue reports.committee --tenant T --arg k=v``), the
API (``POST /api/v1/jobs``) and the workspace's Jobs page follow from the registry.
"""
