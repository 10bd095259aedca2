"""Entry point of ``python -m bench`` (``make bench``)."""
import sys

from .cli import main

sys.exit(main())
