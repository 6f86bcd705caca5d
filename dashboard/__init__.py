"""The Panel app over a run folder (docs/ARCHITECTURE.md): ``panel serve dashboard``, or in a notebook::

    from dashboard import explore
    app = explore("runs/demo")
    app              # the app, inline (after pn.extension())
    app.selection    # the selected galaxies, every catalogue column
"""


def explore(run_dir, **kw):
    """The app on the run ``run_dir`` for a notebook or a script: see :class:`dashboard.notebook.Explorer`."""
    # Imported here, so that `import dashboard` (every served session does) stays free.
    from dashboard.notebook import Explorer

    return Explorer(run_dir, **kw)
