"""Moved to tests/helpers/gaussian_oracle.py; this module name stays for test files that still import it bare."""

from tests.helpers.gaussian_oracle import *  # noqa: F401,F403
from tests.helpers.gaussian_oracle import x64  # noqa: F401
