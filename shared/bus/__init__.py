"""The message bus: CloudEvents envelopes over RabbitMQ (or kombu's in-process transport).

State and the events announcing it commit together in the outbox; a relay publishes
them with publisher confirms; consumers record each message in an inbox in the same
transaction as its effects and ack only after commit.
"""
