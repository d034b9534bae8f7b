"""``python -m lecun_jax.look WORKDIR [--port=N] [--host=H]``: serve the page of a finished run.

A workdir that is no finished run, a bad flag or a port that cannot be bound
ends the command with one line on stderr and the project's exit codes
(``lecun_jax.errors``): 2 for usage, 1 for data and I/O, 130 for Ctrl-C.
"""

from __future__ import annotations

import argparse
import sys


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, not argparse's usage block
        print(f"error: {message} (usage: python -m lecun_jax.look WORKDIR [--port=N] [--host=H])", file=sys.stderr)
        sys.exit(2)  # lecun_jax.errors.USAGE, without importing JAX for a typo


def parse(argv: list[str]) -> argparse.Namespace:
    parser = _Parser(prog="python -m lecun_jax.look", description="Draw a digit and watch every layer of a run's network.")
    parser.add_argument("workdir", help="a finished run's workdir")
    parser.add_argument("--port", type=int, default=0, help="port to serve on (default: any free one)")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    args = parser.parse_args(argv)
    if not 0 <= args.port <= 65535:
        parser.error(f"--port={args.port}: from 0 to 65535")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse(sys.argv[1:] if argv is None else argv)
    from lecun_jax import errors, look
    from lecun_jax.data import DataError
    from lecun_jax.look.views import ModelError

    try:
        look.serve(args.workdir, host=args.host, port=args.port, echo=lambda line: print(line, flush=True))
    except (look.RunError, ModelError) as e:
        return _fail(str(e), errors.USAGE)
    except (DataError, OSError) as e:  # a damaged file of the run; a port taken or an address not here
        return _fail(str(e) if isinstance(e, DataError) else _os_line(e, args), errors.FAULT)
    except KeyboardInterrupt:
        return errors.INTERRUPTED
    return 0


def _os_line(e: OSError, args) -> str:
    return f"{args.host}:{args.port}: {e.strerror or e}" if e.filename is None else f"{e.filename}: {e.strerror or e}"


def _fail(line: str, code: int) -> int:
    print(f"error: {line}", file=sys.stderr, flush=True)
    return code


if __name__ == "__main__":
    sys.exit(main())
