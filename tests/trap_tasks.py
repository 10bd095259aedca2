"""A task that falls into luigi's RangeDaily trap: an output with no filesystem path and no bulk_complete."""
import luigi
from luigi.tools.range import RangeDaily  # noqa: F401

import luigi_pipelines.defaults  # noqa: F401 - the package's [retcode] and [RangeDaily], as a pipeline module gets them


class _NoPathTarget(luigi.Target):
    def exists(self) -> bool:
        return False


class NoBulkComplete(luigi.Task):
    date = luigi.DateParameter()

    def output(self):
        return _NoPathTarget()

    def run(self):
        pass
