"""The served entry: ``panel serve dashboard [--plugins dashboard.export] [--args --run PATH [--links FILE] [--user NAME]]``."""
import sys

from core import links
from dashboard.app import TITLE, create_app
from dashboard.data import resolve_run_path
from dashboard.discovery import resolve_user

# Bokeh sets sys.argv to the app's --args only while it runs this script.
links.configure(sys.argv[1:])
create_app(resolve_run_path(sys.argv[1:]), user=resolve_user(sys.argv[1:])).servable(title=TITLE)
