"""The dev stack (Kafka, PostgreSQL and the services on one machine, for tests, the demo and the
bench) and the demo with its simulated community. Nothing here is deployed: see `deploy/`."""
