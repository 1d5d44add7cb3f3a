"""Message brokers relance runs on: RabbitMQ in production, an in-process queue for the embedded demo and tests."""
