"""The served entry: ``panel serve dashboard [--plugins dashboard.export] [--args --run PATH [--links FILE] [--user NAME]]``."""
import sys

from core import links
from dashboard.app import TITLE, create_app
from dashboard.args import parse_app_args

# Bokeh sets sys.argv to the app's --args only while it runs this script.
ARGS = parse_app_args(sys.argv[1:])
links.configure(ARGS.links)
create_app(ARGS.run, user=ARGS.user).servable(title=TITLE)
