-- Run once by the postgres:17 image on an empty data directory (docker-compose.yml mounts it
-- into /docker-entrypoint-initdb.d). One role and one database per service, as devstack/provision.py
-- provisions them: each database is owned by its service's role and closed to everyone else,
-- so a service can reach its own state and no other's.
--
-- DEVELOPMENT PASSWORDS ONLY: they are in this file and in docker-compose.yml.

CREATE ROLE flywheel_awareness LOGIN PASSWORD 'awareness-dev';
CREATE DATABASE flywheel_awareness OWNER flywheel_awareness;
REVOKE ALL ON DATABASE flywheel_awareness FROM PUBLIC;

CREATE ROLE flywheel_engagement LOGIN PASSWORD 'engagement-dev';
CREATE DATABASE flywheel_engagement OWNER flywheel_engagement;
REVOKE ALL ON DATABASE flywheel_engagement FROM PUBLIC;

CREATE ROLE flywheel_advocacy LOGIN PASSWORD 'advocacy-dev';
CREATE DATABASE flywheel_advocacy OWNER flywheel_advocacy;
REVOKE ALL ON DATABASE flywheel_advocacy FROM PUBLIC;

CREATE ROLE flywheel_gateway LOGIN PASSWORD 'gateway-dev';
CREATE DATABASE flywheel_gateway OWNER flywheel_gateway;
REVOKE ALL ON DATABASE flywheel_gateway FROM PUBLIC;
