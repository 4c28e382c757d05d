"""Runs one program through the real pipeline, for trying the sandbox by hand:

    python manage.py run_code --lang py -c 'print(1)'
    python manage.py run_code --lang bash -f script.sh -- arg1 arg2
"""

import json
import sys

from django.core.management.base import BaseCommand, CommandError

from executor import pipeline
from sandbox_project.auth import Caller
from sandbox_project.errors import ApiError


class Command(BaseCommand):
    help = "Run code in the sandbox and print the /exec response as JSON."

    def add_arguments(self, parser):
        parser.add_argument("--lang", default="py")
        parser.add_argument("-c", "--code", help="the program text (or give a file)")
        parser.add_argument("-f", "--file", help="a file holding the program ('-' for stdin)")
        parser.add_argument("program_args", nargs="*", metavar="ARG", help="arguments for the program")
        parser.add_argument("--timeout", type=int, help="run time limit in ms (at most SANDBOX_TIMEOUT_MS)")

    def handle(self, *args, **opts):
        code = opts["code"]
        if code is None:
            if not opts["file"]:
                raise CommandError("give -c CODE or a file")
            code = sys.stdin.read() if opts["file"] == "-" else open(opts["file"]).read()
        request = {"lang": opts["lang"], "code": code, "args": opts["program_args"], "timeout": opts["timeout"]}
        try:
            response = pipeline.execute(request, Caller("cli", "cli"))
        except ApiError as error:
            raise CommandError(f"{error.status_code}: {json.dumps(error.body)}") from None
        self.stdout.write(json.dumps(response, indent=2))
