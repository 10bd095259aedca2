"""``luigi_pipelines.settings``: plain frozen dataclasses, and the luigi sections that build them."""
from __future__ import annotations

import dataclasses
import subprocess
import sys

import pytest

from luigi_pipelines.settings import DatabaseSettings, LoadSettings, S3Settings


def test_settings_import_no_luigi_boto3_or_driver():
    code = ("import sys, luigi_pipelines.settings; "
            "print(','.join(m for m in ('luigi', 'boto3', 'botocore', 'psycopg2') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_secrets_are_not_in_the_repr():
    shown = repr(DatabaseSettings(dsn="password=s3cret", password="s3cret")) + repr(
        S3Settings(aws_secret_access_key="s3cret", aws_access_key_id="AKIA"))
    assert "s3cret" not in shown and "AKIA" not in shown


def test_load_settings_refuse_names_that_are_not_identifiers():
    with pytest.raises(ValueError, match="not a valid SQL identifier"):
        LoadSettings(marker_table='m"; DROP TABLE x; --')
    assert str(LoadSettings(marker_schema="ops").marker) == "ops.partition_marker"
    assert LoadSettings(copy_buffer_kb=2).copy_buffer == 2048


def test_s3_client_kwargs_only_what_is_set():
    assert S3Settings().client_kwargs() == {}
    assert S3Settings(endpoint_url="http://127.0.0.1:9", region_name="x").client_kwargs() == {
        "endpoint_url": "http://127.0.0.1:9", "region_name": "x"}


def test_the_luigi_sections_build_the_settings_with_every_field(stack):
    from luigi_pipelines import config

    stack.set_config("load", "copy_buffer_kb", "64")
    stack.set_config("s3", "addressing_style", "path")
    assert config.load_settings().copy_buffer_kb == 64
    assert config.s3_settings().addressing_style == "path"
    for section, cls in ((config.database, DatabaseSettings), (config.s3, S3Settings), (config.load, LoadSettings)):
        fields = {f.name for f in dataclasses.fields(cls)}
        assert fields <= set(section().param_kwargs), (cls, fields - set(section().param_kwargs))


def test_each_setting_has_one_default_the_dataclass_one():
    """A setting's default is declared once, on its settings dataclass; the luigi section takes it from there, so a
    section built from no cfg value equals the dataclass built from nothing (a literal default in config.py that
    drifted would differ here, and the source check below refuses one)."""
    import inspect

    from luigi_pipelines import config

    for section, cls in ((config.database, DatabaseSettings), (config.s3, S3Settings), (config.load, LoadSettings)):
        for name, param in section.get_params():
            if name in {f.name for f in dataclasses.fields(cls)}:
                assert param._default == getattr(cls(), name), (section.__name__, name)
    literal = [line.strip() for line in inspect.getsource(config).splitlines()
               if "default=" in line and "default=_" not in line]
    assert literal == [], f"config.py declares defaults of its own: {literal}"
