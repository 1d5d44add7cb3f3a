"""The relay: publishes the outbox's commands to the ERP exchange with publisher confirms, at least once."""
