"""Outbound delivery: the journey and signal events, POSTed to subscribers' URLs.

A subscription (`routes.py`) names a URL and the CloudEvents types it wants. The fan-out
(`fanout.py`) reads the output topics in its own consumer group and, in each batch's
transaction, queues one delivery per (matching subscription, event) (`store.py`). The sender
(`sender.py`) POSTs each delivery as a structured-mode CloudEvent signed per Standard Webhooks
(`signing.py`), retries with capped exponential back-off and full jitter, keeps each member's
deliveries in order per subscription, and dead-letters what still fails after the give-up age.
`worker.py` wires it all into the gateway process.
"""
