"""The root of the notifier's errors: catch :class:`NotifierError` to catch every error the notifier raises on purpose.

Each error is defined beside the code that raises it and says what its caller can do:

- :class:`~services.notifier.command.BadCommand`: the message is not a usable command; dead-letter it, never retry.
- :class:`~services.notifier.service.NotNow`: quiet hours; retry the command when they end.
- :class:`~services.notifier.mime.MimeError` (``InvalidAddress``, ``UnsafeHeaderText``, ``RefusedMessage``): the
  reminder cannot be sent as built; retrying cannot help, a person must correct the data.
- :class:`~services.notifier.smtp.SendError`: what the SMTP server did (``TemporaryFailure``, ``PermanentFailure``,
  ``UnknownOutcome``) and, from the delivery protocol, ``SendDeferred`` and ``SendInProgress``: redeliver later.
- :class:`~services.notifier.preview.PreviewError`: the preview cannot be built (unknown level, nothing to remind).
- :class:`~services.notifier.audit.UnknownMessage`: no stored message has that Message-ID.
"""

from __future__ import annotations


class NotifierError(Exception):
    """Base of the notifier's errors."""
