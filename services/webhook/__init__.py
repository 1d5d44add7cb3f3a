"""The webhook deliverer: posts the outbox's commands to an ERP's HTTPS endpoint, signed, at least once."""
