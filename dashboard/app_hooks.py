"""Bokeh server hooks of the directory app: open the run and compile numba before the first visitor.

Without this the first page view would pay for reading the catalogue and for numba's
compilation of datashader's and our kernels (seconds); ``panel serve --warm`` does the
same through ``main.py``. The run comes from the same ``--args --run`` / BLUEBERRY_RUN.
"""
import logging
import sys

from core.errors import BlueberryError
from dashboard.app import prepared
from dashboard.args import parse_app_args

# Bokeh runs this module with the app's --args as sys.argv.
RUN_PATH = parse_app_args(sys.argv[1:]).run


def on_server_loaded(server_context):
    from bokeh.settings import settings

    # Bokeh checks every new session's document for layout and model errors (~0.1 s of the
    # server on the page's critical path). Every session builds the same views, which
    # ``warm_up`` has checked once in this process: the check is done, not skipped.
    settings.perform_document_validation.set_value(False)
    try:
        prepared(str(RUN_PATH))
    except BlueberryError as error:
        # The page says so to every visitor; here it is only logged.
        logging.getLogger("blueberry.dashboard").warning("no run to show yet: %s", error)


def on_server_unloaded(server_context):
    # A stopped server leaves the SAMP hub (atexit does the same when the process simply exits).
    from dashboard import samp

    samp.close()
