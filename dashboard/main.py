"""The served entry: ``panel serve dashboard [--plugins dashboard.export] [--args --run PATH --user NAME]``."""
import sys

from dashboard.app import TITLE, create_app
from dashboard.data import resolve_run_path
from dashboard.discovery import resolve_user

create_app(resolve_run_path(sys.argv[1:]), user=resolve_user(sys.argv[1:])).servable(title=TITLE)
