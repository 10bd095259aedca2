"""The package's luigi defaults (``defaults.cfg``: ``[retcode]``, ``[RangeDaily]``, ``[core]``, ``[resources]``).

luigi reads ``luigi.cfg`` from the current directory only, so a pipeline run from a user's own
project or from cron (cwd ``/``) would otherwise get luigi's own defaults: every failure exits 0,
``RangeDaily`` drops dates older than 100 days and schedules 50. Importing this module (the task
modules do) makes ``defaults.cfg`` the first of luigi's config paths, so every file luigi reads
(``/etc/luigi/luigi.cfg``, ``./luigi.cfg``, ``LUIGI_CONFIG_PATH``) and anything set in-process still
overrides it. ``luigi --module`` imports the module before it reads ``[core]``, ``[retcode]`` or a
task's parameters, so the defaults are in place in time. Only ``[core] autoload_range`` cannot be
set this way: luigi reads it when ``luigi`` itself is imported. This applies to luigi's cfg parser
(its default); with ``LUIGI_CONFIG_PARSER=toml`` put these settings in your ``luigi.toml``.
"""
from __future__ import annotations

import configparser
from pathlib import Path

from luigi.configuration import LuigiConfigParser

PATH = Path(__file__).with_name("defaults.cfg")


def install(path: Path = PATH) -> None:
    """Put ``path`` first among luigi's config paths, and under what the loaded config already holds.

    Not a plain ``reload()``: that would re-read every file over values set in-process meanwhile.
    """
    paths = LuigiConfigParser._config_paths
    if str(path) not in paths:
        paths.insert(0, str(path))  # read first (lowest priority) by every later reload
    config = LuigiConfigParser.instance()  # made now, reading the paths above, if luigi has not yet
    defaults = configparser.ConfigParser(interpolation=None)
    defaults.optionxform = str  # type: ignore[assignment,method-assign]  # luigi keeps option names as written
    defaults.read(path)
    for section in defaults.sections():
        if not config.has_section(section):
            config.add_section(section)
        for option, value in defaults.items(section):
            if not config.has_option(section, option):
                config.set(section, option, value)


install()
