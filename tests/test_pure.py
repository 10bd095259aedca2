"""The pure layers (partitions, sql, layouts, errors, sample) import nothing with effects."""
import subprocess
import sys


def test_pure_modules_import_no_effects():
    code = (
        "import sys; import luigi_pipelines.partitions, luigi_pipelines.sql, luigi_pipelines.layouts, luigi_pipelines.errors, "
        "luigi_pipelines.devstack.sample, luigi_pipelines.manifests, luigi_pipelines.infer, luigi_pipelines.drafts; "
        "print(','.join(m for m in ('boto3', 'botocore', 'luigi') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == ""



def test_a_command_that_reaches_no_s3_imports_no_boto3():
    """boto3, botocore's clients and s3transfer cost about 0.1-0.2 s to import: only a process that reaches S3
    pays it (``S3Client`` imports them with its first session). An empty range, or a run whose every
    partition is done, never does."""
    code = (
        "import atexit, sys; "
        "atexit.register(lambda: print(','.join(m for m in ('boto3', 'botocore.session', 's3transfer') if m in sys.modules))); "
        "from luigi.cmdline import luigi_run; "
        "luigi_run(['--module', 'luigi_pipelines.pipelines.transactions', 'RangeDaily', '--of', 'LoadTransactions', "
        "'--start', '2000-01-01', '--stop', '2000-01-01', '--local-scheduler'])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "", out.stdout

def _contract_modules(contract: str, field: str = "source_modules") -> set[str]:
    import configparser
    from pathlib import Path

    cfg = configparser.ConfigParser()
    cfg.read(Path(__file__).resolve().parents[1] / "setup.cfg")
    text = cfg[f"importlinter:contract:{contract}"][field]
    return {name.strip() for line in text.splitlines() for name in line.split(":") if name.strip()}


def test_the_import_contracts_name_every_module_of_the_package():
    """A module left out of the layers contract (or of the dev stack's) is checked by nothing: `make lint` would
    pass whatever it imports. Every module of the package is in the layers but the dev stack's, which are in none
    and which no product module may import."""
    import pkgutil

    import luigi_pipelines

    modules = {m.name for m in pkgutil.walk_packages(luigi_pipelines.__path__, "luigi_pipelines.")}
    product = {m for m in modules if not m.startswith(("luigi_pipelines.devstack", "luigi_pipelines.pipelines."))}

    def uncovered(listed: set[str]) -> set[str]:  # a package listed covers its modules
        return {m for m in product if not any(m == n or m.startswith(n + ".") for n in listed)}

    assert uncovered(_contract_modules("layers", "layers")) == set()
    assert uncovered(_contract_modules("devstack")) == {"luigi_pipelines.cli"}
