"""The pure layers (partitions, sql, layouts, errors, sample) import nothing with effects."""
import subprocess
import sys


def test_pure_modules_import_no_effects():
    code = (
        "import sys; import luigi_pipelines.partitions, luigi_pipelines.sql, luigi_pipelines.layouts, luigi_pipelines.errors, "
        "luigi_pipelines.devstack.sample, luigi_pipelines.manifests; "
        "print(','.join(m for m in ('boto3', 'botocore', 'luigi') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == ""
