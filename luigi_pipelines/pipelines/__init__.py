"""Concrete pipelines: each a few declarative lines on top of ``luigi_pipelines.LoadPartition``."""
