"""Tooling for development and tests, never imported by the platform itself: the private
PostgreSQL cluster and Mosquitto broker (`egenmon dev`, the suite's fixtures, the
benchmarks), demo data and the device simulator (`egenmon simulate`)."""
