"""Name rules: what a dataset version, a repository id, a label or a license id may be.

One rule each, used by every command that takes such a name (``push``, ``evolve``), so a name
accepted by one is accepted by the other. Each ``*_problem`` function says why a name is
refused (or None); each ``check_*`` function raises the one-line :class:`EvoqError`.
"""

from __future__ import annotations

import re

from evoq_data.core.errors import EvoqError

# A Hub name part: letters, digits, '.', '_', '-', starting with a letter or digit.
_PART = r"[A-Za-z0-9][A-Za-z0-9._-]{0,95}"
REPO_ID_RE = re.compile(rf"{_PART}/{_PART}")  # OWNER/NAME (a dataset or model repository)
HUB_ID_RE = re.compile(rf"{_PART}(/{_PART})?")  # NAME or OWNER/NAME (a model on the Hub)
LABEL_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")  # a short name: pool label, eval name
LICENSE_RE = re.compile(r"[a-z0-9][a-z0-9.+-]*")  # a Hub license id


def version_problem(version: str) -> str | None:
    """Why ``version`` cannot be a tag name, or None. The rules are git's check-ref-format
    rules for one component of ``refs/tags/<version>`` (a version is one component: no '/'),
    plus evoq's own: not 'main' or 'HEAD', not starting with '-', at most 128 characters."""
    if not isinstance(version, str) or not version:
        return "it is empty"
    bad = sorted({c for c in version if ord(c) < 0x20 or ord(c) == 0x7F or c in " ~^:?*[\\/"})
    if bad:
        return "git refuses the character(s) " + " ".join(repr(c) for c in bad)
    for test, why in (
        (version.startswith("."), "git refuses a name that starts with '.'"),
        (version.endswith("."), "git refuses a name that ends with '.'"),
        (version.endswith(".lock"), "git refuses a name that ends with '.lock'"),
        (".." in version, "git refuses '..' in a name"),
        ("@{" in version, "git refuses '@{' in a name"),
        (version == "@", "git reads '@' as HEAD"),
        (version in ("HEAD", "main"), f"'{version}' names a branch or HEAD, not a version"),
        (version.startswith("-"), "a name that starts with '-' reads as an option"),
        (len(version) > 128, "it is longer than 128 characters"),
    ):
        if test:
            return why
    return None


def repo_id_problem(repo_id: str) -> str | None:
    """Why ``repo_id`` is not a Hub repository id OWNER/NAME, or None."""
    if not isinstance(repo_id, str) or not REPO_ID_RE.fullmatch(repo_id):
        return "expected OWNER/NAME (letters, digits, '.', '_', '-')"
    if ".." in repo_id or "--" in repo_id or repo_id.endswith((".", "-", ".git")):
        return "the Hub refuses '..', '--' and a name ending in '.', '-' or '.git'"
    return None


def check_version(version: str) -> str:
    problem = version_problem(version)
    if problem:
        raise EvoqError(f"malformed version {version!r}: {problem}; use a tag name such as v1 "
                        "or 2026.11")
    return version


def check_repo_id(repo_id: str, option: str = "repo id") -> str:
    if repo_id_problem(repo_id):
        raise EvoqError(f"malformed {option} {repo_id!r}: expected OWNER/NAME "
                        "(letters, digits, '.', '_', '-')")
    return repo_id


def check_label(label: str, option: str) -> str:
    """A short name (``--pool-label``, an eval name): letters, digits, '.', '_', '-'."""
    if not isinstance(label, str) or not LABEL_RE.fullmatch(label):
        raise EvoqError(f"malformed {option} {label!r}: letters, digits, '.', '_', '-'")
    return label


def check_license(license: str) -> str:
    if not LICENSE_RE.fullmatch(license or ""):
        raise EvoqError(f"malformed license {license!r}: use a Hub license id such as "
                        "apache-2.0, mit or cc-by-4.0")
    return license
