"""The benchmark of luigi_pipelines: ``python -m bench`` (``make bench``) measures load speed, memory and
scheduling cost against a PostgreSQL and an S3 server that it starts itself, and prints and saves one run.

Each measured topic is a section (``bench/sections/``); ``python -m bench --list`` names them and
``--only`` picks some. Nothing here asserts a timing: targets are reported as pass or fail, never enforced.
"""
