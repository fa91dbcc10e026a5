-- Run once, when the PostgreSQL volume is first initialised: one database per service.
-- POSTGRES_DB creates inventory; these two complete the set.
CREATE DATABASE shipments;
CREATE DATABASE tracking;
