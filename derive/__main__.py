"""`python -m derive`. A Ctrl-C that arrives while the command is still being imported,
before `main` installs its own handling, exits 130 with one line as well."""
import signal


def _interrupted_while_starting(signum, frame):
    import os
    import sys
    sys.stderr.write("derive: error: interrupted\n")
    sys.stderr.flush()
    os._exit(130)   # nothing has been written yet: there is nothing to clean up


signal.signal(signal.SIGINT, _interrupted_while_starting)

from derive.cli import main  # noqa: E402  (after the handler, on purpose)

raise SystemExit(main())
