"""The local development stack: servers the project starts itself (PostgreSQL, moto's S3, luigid), sample data
and the demo's seeding.

Used by ``make demo`` (``luigi-pipelines demo``), the tests and the benchmark; no product module imports it
(an import-linter contract in setup.cfg), so a production install never depends on it or its extra (``local``).
"""
