"""The staging folder of a push: where a version is built before it is published.

A push builds the whole repository folder in a locked ``.evoq-push-<pid>-*`` folder (beside
``--local-dir``, else in the temp folder) and removes it on exit. What killed pushes left
behind (staging folders whose lock no process holds, the previous version a killed
``--local-dir`` swap left beside it) is removed, or put back, before a new one starts.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

log = logging.getLogger(__name__)

STAGING_PREFIX = ".evoq-push-"
PROCESS_START = time.time()


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_staging(parent: Path, local_dir: Path | None = None) -> list[str]:
    """Remove what killed pushes left in ``parent``: staging folders whose lock no process
    holds (or, from an evoq without locks, older than this process); and the previous
    version a killed swap left beside ``local_dir`` (put back when ``local_dir`` is gone).
    Returns the names removed or restored."""
    import fcntl

    done = []
    for folder in sorted(parent.glob(STAGING_PREFIX + "*")):
        if not folder.is_dir() or folder.is_symlink():
            continue
        lock = folder / ".lock"
        if lock.is_file():
            with open(lock, "a") as fh:
                try:
                    fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except OSError:
                    continue  # a running push holds it
                shutil.rmtree(folder, ignore_errors=True)
        elif folder.stat().st_mtime < PROCESS_START:
            shutil.rmtree(folder, ignore_errors=True)
        else:
            continue
        done.append(folder.name)
    if local_dir is not None:
        for old in sorted(parent.glob(f".{local_dir.name}.old-*")):
            pid = old.name.rsplit("-", 1)[-1]
            if not pid.isdigit() or _pid_alive(int(pid)) or not old.is_dir():
                continue
            if not local_dir.exists():
                os.replace(old, local_dir)  # killed between the two renames: put it back
                log.warning("restored %s from %s (a push was killed mid-swap)", local_dir, old)
            else:
                shutil.rmtree(old, ignore_errors=True)
            done.append(old.name)
    if done:
        log.info("removed what killed pushes left in %s: %s", parent, ", ".join(done))
    return done


@contextmanager
def staging_dir(parent: Path | None, local_dir: Path | None = None):
    """A locked staging folder ``.evoq-push-<pid>-*`` in ``parent`` (the temp folder when
    None), removed on exit; stale ones of killed pushes are removed first."""
    import fcntl

    parent = Path(parent or tempfile.gettempdir())
    remove_stale_staging(parent, local_dir)
    tmp = Path(tempfile.mkdtemp(prefix=f"{STAGING_PREFIX}{os.getpid()}-", dir=parent))
    try:
        with open(tmp / ".lock", "a") as fh:
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                log.warning("cannot lock %s; a later push may remove it while in use", tmp)
            yield tmp
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
