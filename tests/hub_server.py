"""A small Hugging Face Hub-compatible server for tests, on 127.0.0.1 only.

No PyPI package implements the Hub's write side, so this serves the endpoints that the real
``huggingface_hub`` client (plain LFS uploads, ``HF_HUB_DISABLE_XET=1``) and
``datasets.load_dataset`` use: repo creation, YAML validation, preupload, the git-lfs batch API
with single-part PUT and verify, NDJSON commits, tags and branches, refs, repo info, tree and
paths-info listings, and ``resolve`` downloads with ETag / X-Repo-Commit / Range.

State lives in memory (``HubServer.repos``) so tests can inspect commits, tags and uploads.
Faults can be injected (``HubServer.faults``) to drop connections at chosen points, and every
request's headers and body are kept in ``HubServer.requests`` (to check that no secret leaks
and to count uploads).

    with HubServer(token="hf_test") as hub:
        HfApi(endpoint=hub.url, token="hf_test").create_repo("me/d", repo_type="dataset")
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import socket
import threading
import time
from dataclasses import dataclass, field
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, urlsplit

GITATTRIBUTES = b"*.parquet filter=lfs diff=lfs merge=lfs -text\n*.png filter=lfs diff=lfs merge=lfs -text\n"


def git_blob_oid(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def lfs_pointer(sha256: str, size: int) -> bytes:
    return (f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha256}\n"
            f"size {size}\n").encode()


@dataclass
class Entry:
    """A file in a commit's tree: regular bytes, or an LFS object by sha256."""

    data: bytes | None = None
    lfs_oid: str | None = None
    size: int = 0

    def blob_oid(self) -> str:
        if self.lfs_oid:
            return git_blob_oid(lfs_pointer(self.lfs_oid, self.size))
        return git_blob_oid(self.data or b"")


@dataclass
class Commit:
    oid: str
    parent: str | None
    title: str
    tree: dict[str, Entry]
    date: float = field(default_factory=time.time)


@dataclass
class Repo:
    repo_id: str
    repo_type: str
    private: bool
    commits: dict[str, Commit] = field(default_factory=dict)
    branches: dict[str, str] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    lfs: dict[str, bytes] = field(default_factory=dict)

    def resolve(self, rev: str) -> Commit | None:
        rev = unquote(rev)
        oid = self.branches.get(rev) or self.tags.get(rev)
        if oid is None and rev in self.commits:
            oid = rev
        return self.commits.get(oid) if oid else None

    def commit(self, parent: str | None, title: str, tree: dict[str, Entry]) -> Commit:
        seed = f"{parent}:{title}:{len(self.commits)}:{time.time_ns()}"
        c = Commit(hashlib.sha1(seed.encode()).hexdigest(), parent, title, tree)
        self.commits[c.oid] = c
        return c


class _Drop(Exception):
    """Close the connection without an answer (an injected fault)."""


class HubServer:
    """Start with ``start()`` (or as a context manager); ``url`` is the endpoint."""

    def __init__(self, token: str | None = None) -> None:
        self.token = token
        self.repos: dict[tuple[str, str], Repo] = {}
        # fault name -> remaining count: "lfs_put" (drop halfway through the body),
        # "commit" (drop before committing), "commit_after" (commit, then drop), "tag".
        self.faults: dict[str, int] = {}
        self.requests: list[dict] = []
        self.lock = threading.RLock()
        self._httpd: ThreadingHTTPServer | None = None

    # -- lifecycle -------------------------------------------------------------------------
    def start(self) -> HubServer:
        server = self

        class Handler(_Handler):
            hub = server

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        threading.Thread(target=self._httpd.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._httpd:
            self._httpd.shutdown()
            self._httpd.server_close()

    def __enter__(self) -> HubServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    @property
    def url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}"

    def repo(self, repo_id: str, repo_type: str = "dataset") -> Repo:
        return self.repos[(repo_type, repo_id)]

    def take_fault(self, name: str) -> bool:
        with self.lock:
            if self.faults.get(name, 0) > 0:
                self.faults[name] -= 1
                return True
        return False


_TYPES = {"datasets": "dataset", "models": "model", "spaces": "space"}
_REPO = r"(?P<type>datasets|models|spaces)/(?P<id>[^/]+/[^/]+?)"


class _Handler(BaseHTTPRequestHandler):
    hub: HubServer
    protocol_version = "HTTP/1.1"

    def log_message(self, *args) -> None:  # keep test output quiet
        pass

    def handle(self) -> None:
        try:
            super().handle()
        except (ConnectionError, TimeoutError):
            pass  # the client went away (or a fault dropped it)

    # -- plumbing --------------------------------------------------------------------------
    def _body(self) -> bytes:
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n) if n else b""

    def _send(self, status: int, body: bytes | dict | list = b"", headers: dict | None = None,
              head: bool = False) -> None:
        if isinstance(body, dict | list):
            body = json.dumps(body).encode()
            headers = {"Content-Type": "application/json", **(headers or {})}
        self.send_response(status)
        for k, v in (headers or {}).items():
            self.send_header(k, str(v))
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if not head and self.command != "HEAD":
            self.wfile.write(body)

    def _error(self, status: int, message: str, code: str | None = None) -> None:
        headers = {"X-Error-Message": message}
        if code:
            headers["X-Error-Code"] = code
        self._send(status, {"error": message}, headers)

    def _drop(self) -> None:
        self.close_connection = True
        try:
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        raise _Drop

    def _authorized(self) -> bool:
        if self.hub.token is None:
            return True
        return self.headers.get("Authorization") == f"Bearer {self.hub.token}"

    def _dispatch(self, method: str) -> None:
        parts = urlsplit(self.path)
        path, query = unquote(parts.path), parse_qs(parts.query)
        body = b"" if method in ("GET", "HEAD") or path.endswith("/lfs-upload") else self._body()
        self.hub.requests.append({"method": method, "path": self.path,
                                  "headers": dict(self.headers.items()), "body": body})
        try:
            for pattern, handler, verbs in _ROUTES:
                m = re.fullmatch(pattern, path)
                if m and method in verbs:
                    return handler(self, method, m, query, body)
            self._error(404, f"no route for {method} {path}")
        except _Drop:
            return

    def do_GET(self) -> None:  # noqa: N802
        self._dispatch("GET")

    def do_HEAD(self) -> None:  # noqa: N802
        self._dispatch("HEAD")

    def do_POST(self) -> None:  # noqa: N802
        self._dispatch("POST")

    def do_PUT(self) -> None:  # noqa: N802
        self._dispatch("PUT")

    def do_DELETE(self) -> None:  # noqa: N802
        self._dispatch("DELETE")

    def _repo(self, m) -> Repo | None:
        repo = self.hub.repos.get((_TYPES[m["type"]], m["id"]))
        if repo is None or (repo.private and not self._authorized()):
            self._error(404, "Repository not found", "RepoNotFound")
            return None
        return repo

    # -- write side ------------------------------------------------------------------------
    def create_repo(self, method, m, query, body) -> None:
        if not self._authorized():
            return self._error(401, "Invalid credentials in Authorization header")
        payload = json.loads(body or b"{}")
        repo_type = payload.get("type") or "model"
        repo_id = f"{payload.get('organization') or 'user'}/{payload['name']}"
        url = f"{self.hub.url}/{'' if repo_type == 'model' else repo_type + 's/'}{repo_id}"
        with self.hub.lock:
            if (repo_type, repo_id) in self.hub.repos:
                return self._send(409, {"error": "You already created this repo", "url": url})
            repo = Repo(repo_id, repo_type, payload.get("visibility") == "private")
            first = repo.commit(None, "initial commit", {".gitattributes": Entry(GITATTRIBUTES)})
            repo.branches["main"] = first.oid
            self.hub.repos[(repo_type, repo_id)] = repo
        self._send(200, {"url": url, "name": repo_id})

    def validate_yaml(self, method, m, query, body) -> None:
        import yaml

        content = json.loads(body)["content"]
        if content.startswith("---"):
            try:
                yaml.safe_load(content.split("---")[1])
            except yaml.YAMLError as exc:
                return self._error(400, f"Invalid YAML: {exc}")
        self._send(200, {"errors": [], "warnings": []})

    def preupload(self, method, m, query, body) -> None:
        repo = self._repo(m)
        if repo is None:
            return
        if not self._authorized():
            return self._error(401, "Invalid credentials")
        head = repo.resolve(m["rev"])
        files = []
        for f in json.loads(body)["files"]:
            sample = base64.b64decode(f["sample"])
            binary = b"\0" in sample or f["path"].endswith((".parquet", ".png", ".jpg"))
            mode = "lfs" if binary or f["size"] > 10 * 2**20 else "regular"
            old = head.tree.get(f["path"]) if head else None
            oid = None
            if old is not None:
                oid = old.lfs_oid if old.lfs_oid else old.blob_oid()
            files.append({"path": f["path"], "uploadMode": mode, "shouldIgnore": False,
                          "oid": oid})
        self._send(200, {"files": files, "commitOid": head.oid if head else None})

    def lfs_batch(self, method, m, query, body) -> None:
        repo = self._repo(m)
        if repo is None:
            return
        if not self._authorized():
            return self._error(401, "Invalid credentials")
        objects = []
        base = f"{self.hub.url}/{m['type']}/{m['id']}.git/info/lfs/objects"
        for obj in json.loads(body)["objects"]:
            entry = {"oid": obj["oid"], "size": obj["size"]}
            if obj["oid"] not in repo.lfs:
                entry["actions"] = {
                    "upload": {"href": f"{base}/{obj['oid']}/lfs-upload"},
                    "verify": {"href": f"{base}/verify"},
                }
            objects.append(entry)
        self._send(200, {"transfer": "basic", "objects": objects})

    def lfs_put(self, method, m, query, body) -> None:
        # the upload href stands for the Hub's presigned storage URL: no Authorization header
        repo = self.hub.repos.get((_TYPES[m["type"]], m["id"]))
        if repo is None:
            return self._error(404, "Repository not found", "RepoNotFound")
        n = int(self.headers.get("Content-Length") or 0)
        if self.hub.take_fault("lfs_put"):
            self.rfile.read(n // 2)
            self._drop()
        data = self.rfile.read(n)
        if hashlib.sha256(data).hexdigest() != m["oid"]:
            return self._error(400, "sha256 mismatch")
        with self.hub.lock:
            repo.lfs[m["oid"]] = data
        self._send(200, b"")

    def lfs_verify(self, method, m, query, body) -> None:
        repo = self._repo(m)
        if repo is None:
            return
        obj = json.loads(body)
        ok = obj["oid"] in repo.lfs and len(repo.lfs[obj["oid"]]) == obj["size"]
        self._send(200, {}) if ok else self._error(404, "object not found")

    def commit(self, method, m, query, body) -> None:
        repo = self._repo(m)
        if repo is None:
            return
        if not self._authorized():
            return self._error(401, "Invalid credentials")
        if self.hub.take_fault("commit"):
            self._drop()
        branch = unquote(m["rev"])
        lines = [json.loads(line) for line in body.splitlines() if line.strip()]
        header = next(x["value"] for x in lines if x["key"] == "header")
        with self.hub.lock:
            if branch not in repo.branches:
                return self._error(404, f"Invalid rev id: {branch}", "RevisionNotFound")
            head = repo.commits[repo.branches[branch]]
            if header.get("parentCommit") and header["parentCommit"] != head.oid:
                return self._error(412, "A commit has happened since. Please refresh and try again.")
            tree = dict(head.tree)
            for item in lines:
                key, v = item["key"], item["value"]
                if key == "file":
                    tree[v["path"]] = Entry(data=base64.b64decode(v["content"]))
                elif key == "lfsFile":
                    if v["oid"] not in repo.lfs:
                        return self._error(422, f"LFS object {v['oid']} was not uploaded")
                    tree[v["path"]] = Entry(lfs_oid=v["oid"], size=len(repo.lfs[v["oid"]]))
                elif key == "deletedFile":
                    if v["path"] not in tree:
                        return self._error(404, "A file with this name doesn't exist")
                    del tree[v["path"]]
                elif key == "deletedFolder":
                    prefix = v["path"].rstrip("/") + "/"
                    tree = {p: e for p, e in tree.items() if not p.startswith(prefix)}
            c = repo.commit(head.oid, header["summary"], tree)
            repo.branches[branch] = c.oid
        if self.hub.take_fault("commit_after"):
            self._drop()
        url = f"{self.hub.url}/{m['type']}/{m['id']}/commit/{c.oid}"
        self._send(200, {"commitUrl": url, "commitOid": c.oid, "pullRequestUrl": None})

    def tag(self, method, m, query, body) -> None:
        repo = self._repo(m)
        if repo is None:
            return
        if not self._authorized():
            return self._error(401, "Invalid credentials")
        if self.hub.take_fault("tag"):
            self._drop()
        with self.hub.lock:
            if method == "DELETE":
                if repo.tags.pop(unquote(m["rev"]), None) is None:
                    return self._error(404, "Tag not found")
                return self._send(204)
            name = json.loads(body)["tag"]
            target = repo.resolve(m["rev"])
            if target is None:
                return self._error(404, f"Invalid rev id: {m['rev']}", "RevisionNotFound")
            if name in repo.tags:
                return self._error(409, f"Tag {name} already exists")
            repo.tags[name] = target.oid
        self._send(200, {})

    # -- read side -------------------------------------------------------------------------
    def refs(self, method, m, query, body) -> None:
        repo = self._repo(m)
        if repo is None:
            return

        def refs(kind, items):
            return [{"name": n, "ref": f"refs/{kind}/{n}", "targetCommit": o}
                    for n, o in sorted(items.items())]

        self._send(200, {"branches": refs("heads", repo.branches), "converts": [],
                         "tags": refs("tags", repo.tags), "pullRequests": []})

    def info(self, method, m, query, body) -> None:
        repo = self._repo(m)
        if repo is None:
            return
        c = repo.resolve(m["rev"] or "main")
        if c is None:
            return self._error(404, f"Invalid rev id: {m['rev']}", "RevisionNotFound")
        self._send(200, {
            "id": repo.repo_id, "_id": repo.repo_id, "author": repo.repo_id.split("/")[0],
            "sha": c.oid, "private": repo.private, "disabled": False, "gated": False,
            "downloads": 0, "likes": 0, "tags": [], "cardData": {},
            "lastModified": time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime(c.date)),
            "createdAt": "2026-01-01T00:00:00.000Z",
            "siblings": [{"rfilename": p} for p in sorted(c.tree)],
        })

    def _tree_entry(self, repo: Repo, c: Commit, path: str) -> dict:
        if path in c.tree:
            e = c.tree[path]
            item = {"type": "file", "oid": e.blob_oid(), "path": path,
                    "size": e.size if e.lfs_oid else len(e.data or b"")}
            if e.lfs_oid:
                item["lfs"] = {"oid": e.lfs_oid, "size": e.size,
                               "pointerSize": len(lfs_pointer(e.lfs_oid, e.size))}
            return item
        return {"type": "directory", "oid": hashlib.sha1(path.encode()).hexdigest(),
                "size": 0, "path": path}

    def _children(self, c: Commit, folder: str, recursive: bool) -> list[str]:
        prefix = folder.strip("/") + "/" if folder.strip("/") else ""
        out: set[str] = set()
        for p in c.tree:
            if not p.startswith(prefix):
                continue
            rest = p[len(prefix):].split("/")
            if recursive:
                out.update(prefix + "/".join(rest[: i + 1]) for i in range(len(rest)))
            else:
                out.add(prefix + rest[0])
        return sorted(out)

    def tree(self, method, m, query, body) -> None:
        repo = self._repo(m)
        if repo is None:
            return
        c = repo.resolve(m["rev"])
        if c is None:
            return self._error(404, f"Invalid rev id: {m['rev']}", "RevisionNotFound")
        folder = m["path"] or ""
        names = self._children(c, folder, query.get("recursive", ["0"])[0] in ("1", "true", "True"))
        if folder and not names:
            return self._error(404, f"Entry not found: {folder}", "EntryNotFound")
        self._send(200, [self._tree_entry(repo, c, p) for p in names])

    def paths_info(self, method, m, query, body) -> None:
        repo = self._repo(m)
        if repo is None:
            return
        c = repo.resolve(m["rev"])
        if c is None:
            return self._error(404, f"Invalid rev id: {m['rev']}", "RevisionNotFound")
        ctype = self.headers.get("Content-Type", "")
        if "json" in ctype:
            paths = json.loads(body).get("paths", [])
        else:
            paths = parse_qs(body.decode()).get("paths", [])
        out = []
        for p in paths:
            p = p.strip("/")
            if p in c.tree or any(q.startswith(p + "/") for q in c.tree):
                out.append(self._tree_entry(repo, c, p))
        self._send(200, out)

    def resolve(self, method, m, query, body) -> None:
        repo = self._repo(m)
        if repo is None:
            return
        c = repo.resolve(m["rev"])
        if c is None:
            return self._error(404, f"Invalid rev id: {m['rev']}", "RevisionNotFound")
        e = c.tree.get(m["path"])
        if e is None:
            return self._error(404, "Entry not found", "EntryNotFound")
        data = repo.lfs[e.lfs_oid] if e.lfs_oid else (e.data or b"")
        headers = {"X-Repo-Commit": c.oid, "ETag": f'"{e.blob_oid()}"',
                   "Accept-Ranges": "bytes", "Last-Modified": formatdate(c.date, usegmt=True),
                   "Content-Type": "application/octet-stream"}
        if e.lfs_oid:
            headers.update({"X-Linked-Etag": f'"{e.lfs_oid}"', "X-Linked-Size": len(data),
                            "ETag": f'"{e.lfs_oid}"'})
        rng = re.fullmatch(r"bytes=(\d*)-(\d*)", self.headers.get("Range") or "")
        if rng and data:
            start = int(rng[1]) if rng[1] else max(0, len(data) - int(rng[2]))
            end = int(rng[2]) if rng[1] and rng[2] else len(data) - 1
            end = min(end, len(data) - 1)
            headers["Content-Range"] = f"bytes {start}-{end}/{len(data)}"
            return self._send(206, data[start : end + 1], headers, head=method == "HEAD")
        self._send(200, data, headers, head=method == "HEAD")


_ROUTES = [
    (r"/api/repos/create", _Handler.create_repo, {"POST"}),
    (r"/api/validate-yaml", _Handler.validate_yaml, {"POST"}),
    (rf"/api/{_REPO}/preupload/(?P<rev>[^/]+)", _Handler.preupload, {"POST"}),
    (rf"/{_REPO}\.git/info/lfs/objects/batch", _Handler.lfs_batch, {"POST"}),
    (rf"/{_REPO}\.git/info/lfs/objects/(?P<oid>[0-9a-f]{{64}})/lfs-upload", _Handler.lfs_put,
     {"PUT"}),
    (rf"/{_REPO}\.git/info/lfs/objects/verify", _Handler.lfs_verify, {"POST"}),
    (rf"/api/{_REPO}/commit/(?P<rev>[^/]+)", _Handler.commit, {"POST"}),
    (rf"/api/{_REPO}/tag/(?P<rev>[^/]+)", _Handler.tag, {"POST", "DELETE"}),
    (rf"/api/{_REPO}/refs", _Handler.refs, {"GET"}),
    (rf"/api/{_REPO}(?:/revision/(?P<rev>[^/]+))?", _Handler.info, {"GET"}),
    (rf"/api/{_REPO}/tree/(?P<rev>[^/]+)(?:/(?P<path>.*))?", _Handler.tree, {"GET"}),
    (rf"/api/{_REPO}/paths-info/(?P<rev>[^/]+)", _Handler.paths_info, {"POST"}),
    (rf"/{_REPO}/resolve/(?P<rev>[^/]+)/(?P<path>.+)", _Handler.resolve, {"GET", "HEAD"}),
]
