"""Look inside a trained network: a page that draws a digit and shows every layer, every seed.

    python -m lecun_jax.look runs/lecun1989_mnist1989      # prints http://127.0.0.1:<port>/ to open
    python -m lecun_jax.look runs/seeds100 --port=8800     # --host=0.0.0.0 to serve beyond this machine

From Python, for a run of a module of one's own: ``lecun_jax.look.serve(workdir, model=MyModule())``.
The page runs the run's own module in JAX on this machine (``views``); the
drawing is made into a digit the way the run's digits were (``digit``);
``server`` is the standard library's HTTP server. See docs/look.md.
"""

from __future__ import annotations

import zipfile
from pathlib import Path


class RunError(ValueError):
    """A workdir that holds no finished run; the message is one line."""


def finished_run(workdir):
    """The finished run in ``workdir`` (``lecun_jax.load_run``), or a RunError saying what it is instead."""
    from lecun_jax.run.runs import load_run

    path = Path(workdir)
    if not path.is_dir():
        raise RunError(f"{workdir}: no such directory (give a run's workdir, e.g. runs/lecun1989_mnist1989)")
    try:
        run = load_run(path)
    except FileNotFoundError as e:
        raise RunError(str(e)) from None
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as e:  # a file of the run damaged
        from lecun_jax.data import DataError

        raise DataError(f"{workdir}: cannot read the run ({type(e).__name__}: {' '.join(str(e).split())[:200]})") from None
    if run.summary is None or run.params is None:
        raise RunError(f"{workdir}: not a finished run (no summary.json yet): let it finish, or run it again to resume")
    return run


def load_views(workdir, model=None):
    """The page's data for the finished run in ``workdir``, compiled and warmed up; ``model``: a user's module."""
    from lecun_jax.look.views import Views

    return Views(finished_run(workdir), model)


def serve(workdir, model=None, *, host: str = "127.0.0.1", port: int = 0, echo=print) -> None:
    """Serves the page of the run in ``workdir`` until interrupted; ``echo`` gets the address to open."""
    from lecun_jax.look.server import make_server

    server = make_server(load_views(workdir, model), host, port)
    shown = f"[{host}]" if ":" in host else host
    echo(f"serving {workdir} at http://{shown}:{server.server_address[1]}/ (Ctrl-C to stop)")
    try:
        server.serve_forever()
    finally:
        server.server_close()
