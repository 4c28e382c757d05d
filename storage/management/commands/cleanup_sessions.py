"""Removes what has expired, and only that; safe to run while the server serves:

    python manage.py cleanup_sessions            # from cron, e.g. every 15 minutes
    python manage.py cleanup_sessions --dry-run  # only say what would go

- sessions (and files) expired for longer than the longest possible execution, with their
  folders on disk: the grace period means an /exec that found an input just before it
  expired still finishes with it;
- leftovers of executions whose worker died: containers past their deadline and mounted
  work areas older than the longest possible execution (executor.housekeeping.sweep), and
  unmounted workspace/exec_* folders just as old; a running execution's are never touched;
- stateful workspaces (runtime_sessions) idle for longer than SANDBOX_RUNTIME_SESSION_IDLE_S,
  with their files; never one an execution holds;
- audit entries older than SANDBOX_AUDIT_TTL_DAYS when they live in SQL (MongoDB expires
  them itself through its TTL index).
"""

from __future__ import annotations

import shutil
import time
from datetime import timedelta
from pathlib import Path

from django.core.management.base import BaseCommand
from django.utils import timezone

from audit.ttl import delete_expired_rows
from executor import housekeeping
from executor.backends.base import longest_run_s
from runtime_sessions import service as runtime_sessions
from storage import store
from storage.ids import is_valid_id
from storage.models import Session, StoredFile


def _under(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


class Command(BaseCommand):
    help = "Delete expired sessions and files, leftovers of dead executions, and expired audit rows."

    def add_arguments(self, parser):
        parser.add_argument("--dry-run", action="store_true", help="print what would be removed, remove nothing")

    def handle(self, *args, dry_run=False, **options):
        grace_s = longest_run_s()
        cutoff = timezone.now() - timedelta(seconds=grace_s)
        report = {"sessions": 0, "files": 0, "bytes": 0, "work_areas": 0, "containers": 0, "audit_rows": 0,
                  "workspaces": 0}

        # 1. Leftovers of dead executions first: a stale mount inside an expired session's
        #    folder is unmounted before that folder is deleted.
        if dry_run:
            report["work_areas"] = len(housekeeping.stale_work_areas())
        else:
            swept = housekeeping.sweep()
            report["containers"] = swept["containers"]
            report["work_areas"] = swept["work_areas"]
        mounted = housekeeping.mounted_work_areas()
        report["work_areas"] += self._stale_exec_folders(mounted, time.time() - grace_s, dry_run)

        # 2. Expired sessions with their folders, then stray expired files of live sessions.
        for session in list(Session.objects.filter(expires_at__lt=cutoff)):
            folder = store.session_dir(session)
            if any(_under(point, folder) for point in mounted):
                self.stderr.write(f"kept session {session.id}: an execution's work area is still mounted in it")
                continue
            files = list(session.files.values_list("size", flat=True))
            report["sessions"] += 1
            report["files"] += len(files)
            report["bytes"] += sum(files)
            said = (f"session {session.id} ({session.origin}, user {session.user_id or '-'}, {len(files)} files)")
            if not dry_run:
                store.delete_session(session)  # (resets session.id)
            self.stdout.write(f"{'would remove' if dry_run else 'removed'} {said}")
        # (files of the sessions above are counted there)
        for stored in list(StoredFile.objects.filter(expires_at__lt=cutoff, session__expires_at__gte=cutoff)):
            report["files"] += 1
            report["bytes"] += stored.size
            said = f"file {stored.id} of session {stored.session_id}"
            if not dry_run:
                store.delete_file(stored)
            self.stdout.write(f"{'would remove' if dry_run else 'removed'} {said}")

        # 3. Stateful workspaces idle past their time, audit rows past their TTL (SQL only),
        #    slot rows of servers gone for good.
        if not dry_run:
            report["workspaces"] = runtime_sessions.expire()
            report["audit_rows"] = delete_expired_rows()
            from executor.slots import forget_gone_hosts

            gone = forget_gone_hosts()
            if gone:
                self.stdout.write(f"removed {gone} slot rows of servers not seen for an hour")
            from programmatic.service import forget_abandoned_runs

            abandoned = forget_abandoned_runs()
            if abandoned:
                self.stdout.write(f"removed {abandoned} programmatic runs of servers gone meanwhile")

        verb = "would remove" if dry_run else "removed"
        self.stdout.write(
            f"{verb}: {report['sessions']} expired sessions, {report['files']} files ({report['bytes']} bytes), "
            f"{report['work_areas']} stale work areas, {report['containers']} leftover containers, "
            f"{report['workspaces']} idle stateful workspaces, {report['audit_rows']} expired audit entries"
        )

    def _stale_exec_folders(self, mounted: list[Path], older_than: float, dry_run: bool) -> int:
        """Unmounted workspace/exec_* folders (a run that died between mkdir and mount, or a
        reboot that dropped the tmpfs) older than the longest execution."""
        mounted_set = set(mounted)
        removed = 0
        for folder in store.root().glob("*/*/workspace/exec_*"):
            if folder in mounted_set or not is_valid_id(folder.name[5:]) or folder.is_symlink():
                continue
            try:
                if folder.stat().st_mtime >= older_than:
                    continue
            except OSError:
                continue
            removed += 1
            if not dry_run:
                shutil.rmtree(folder, ignore_errors=True)
            self.stdout.write(f"{'would remove' if dry_run else 'removed'} stale work area {folder}")
        return removed
