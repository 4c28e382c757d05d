"""`manage.py migrate`, safe when N replicas start at once on one PostgreSQL.

Django's migrate is not safe to run concurrently: two servers that start together both see a
migration as unapplied, and the second fails half-way (a table that already exists) or, worse,
applies an operation twice. Here every migrate on PostgreSQL first takes a session-level
advisory lock (pg_advisory_lock, one fixed key for this project), so the replicas migrate one
after another: the first applies, the others find nothing left to do. The lock is the
database's own: a replica that dies while holding it releases it with its connection.
SQLite needs nothing (one host, and its writers are serialised by the file lock).
"""

from __future__ import annotations

from django.core.management.commands.migrate import Command as DjangoMigrate
from django.db import connections

# A fixed 64-bit key for pg_advisory_lock: "codeinterp migrate" (any constant would do; this
# one is unlikely to be another application's on a shared server).
LOCK_KEY = 0x636F6465696E7470


class Command(DjangoMigrate):
    help = DjangoMigrate.help + " Serialised across servers on PostgreSQL (an advisory lock)."

    def handle(self, *args, **options):
        connection = connections[options["database"]]
        if connection.vendor != "postgresql":
            return super().handle(*args, **options)
        with connection.cursor() as cursor:
            if options["verbosity"] >= 1:
                self.stdout.write("Waiting for the migration lock (other servers may be migrating)...")
            cursor.execute("SELECT pg_advisory_lock(%s)", [LOCK_KEY])
        try:
            return super().handle(*args, **options)
        finally:
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_advisory_unlock(%s)", [LOCK_KEY])
