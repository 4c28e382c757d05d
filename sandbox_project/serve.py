"""Starts the server: gunicorn with the project's config (sandbox_project/gunicorn.conf.py),
its master also supervising the companions (the nginx front, the pool keeper).

    python -m sandbox_project.serve

gunicorn's master restarts a worker that dies but knows nothing of other children (its
waitpid(-1) even reaps them silently); this arbiter adds them to the same loop.
"""

from __future__ import annotations

import sys
from pathlib import Path

from gunicorn.app.wsgiapp import WSGIApplication
from gunicorn.arbiter import Arbiter


class SupervisingArbiter(Arbiter):
    def reap_workers(self):
        from . import companions

        companions.reap()  # before gunicorn's waitpid(-1) can take their exit status
        super().reap_workers()

    def manage_workers(self):
        super().manage_workers()
        from . import companions

        companions.tend()


class Server(WSGIApplication):
    def run(self):
        SupervisingArbiter(self).run()


def main() -> None:
    config = Path(__file__).with_name("gunicorn.conf.py")
    sys.argv = [sys.argv[0], "-c", str(config), *sys.argv[1:], "sandbox_project.wsgi"]
    Server("%(prog)s [OPTIONS]").run()


if __name__ == "__main__":
    main()
