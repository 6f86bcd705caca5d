"""The served entry: ``panel serve dashboard [--plugins dashboard.export] [--args --run PATH]``."""
import sys

from dashboard.app import TITLE, create_app
from dashboard.data import resolve_run_path

create_app(resolve_run_path(sys.argv[1:])).servable(title=TITLE)
