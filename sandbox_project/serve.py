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
    def handle_term(self):
        """SIGTERM: a graceful stop that loses no call (a rolling restart behind a balancer).

        1. /health answers 503 "draining" (a flag file the workers see), so the balancer takes
           this replica out; for SANDBOX_DRAIN_DELAY_S everything keeps being served, requests
           the balancer sent before it noticed included.
        2. The front (nginx) gets SIGQUIT: it closes its listening socket (a balancer retries a
           refused connection elsewhere) and finishes every request it holds, /exec included,
           the workers still serving them; then it exits.
        3. Only then does gunicorn's own graceful stop end the workers, which are idle by now,
           and on_exit the pool keeper, which removes its warm sandboxes.
        """
        from . import drain

        drain.drain(self)
        raise StopIteration

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
