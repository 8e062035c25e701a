"""Locate and load the openspf RFC 7208 test suite (rfc7208-tests.yml from pyspf's sdist).

Search order: $KEEPMAIL_SPF_SUITE, a copy cached under pytest's cache
directory, an installed copy in site-packages, then `pip download` of the
pyspf sdist (PyPI is reachable from CI), extracted into the cache.

Zone data conventions follow the suite's own driver (pyspf's testspf.py):
SPF-type records are served as TXT when the name has no TXT record (the
suite says drivers must do this: RFC 7208 dropped the SPF type); a value
"NONE" is no record; "TIMEOUT" as an entry makes every other type at the
name time out, and {TXT: TIMEOUT} makes that type time out.
"""

from __future__ import annotations

import os
import site
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path
from typing import Any

import yaml

from tests.support.dnsserver import DnsServer

SUITE_NAME = "rfc7208-tests.yml"
PYSPF_SDIST = "pyspf==2.0.14"
ALL_TYPES = ("A", "AAAA", "MX", "TXT", "PTR", "CNAME", "SPF")


def _installed() -> Path | None:
    roots = [*site.getsitepackages(), site.getusersitepackages(), sys.prefix]
    for root in roots:
        for found in Path(root).rglob(SUITE_NAME) if Path(root).is_dir() else []:
            return found
    return None


def locate(cache_dir: Path) -> Path | None:
    """Path of rfc7208-tests.yml, downloading pyspf's sdist if needed; None if impossible."""
    env = os.environ.get("KEEPMAIL_SPF_SUITE")
    if env and Path(env).is_file():
        return Path(env)
    cached = cache_dir / SUITE_NAME
    if cached.is_file():
        return cached
    found = _installed() or _download()
    if found is None:
        return None
    cache_dir.mkdir(parents=True, exist_ok=True)
    cached.write_bytes(found.read_bytes())
    return cached


def _download() -> Path | None:
    tmp = Path(tempfile.mkdtemp(prefix="pyspf-"))
    try:
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary",
                        ":all:", PYSPF_SDIST, "-d", str(tmp)], check=True, timeout=120,
                       capture_output=True)
    except (subprocess.SubprocessError, OSError):
        return None
    for archive in tmp.glob("pyspf-*.tar.gz"):
        with tarfile.open(archive) as tar:
            member = next((m for m in tar.getmembers() if m.name.endswith(SUITE_NAME)), None)
            if member is None:
                return None
            data = tar.extractfile(member)
            if data is None:
                return None
            out = tmp / SUITE_NAME
            out.write_bytes(data.read())
            return out
    return None


def load(path: Path) -> list[tuple[str, dict[str, Any], dict[str, Any]]]:
    """(test id, test data, scenario zonedata) for every test in the suite."""
    cases = []
    with path.open("rb") as fh:
        for scenario in yaml.safe_load_all(fh):
            for test_id, test in scenario["tests"].items():
                cases.append((test_id, test, scenario.get("zonedata") or {}))
    return cases


def serve(server: DnsServer, zonedata: dict[str, list[Any]]) -> None:
    """Load one scenario's zone into the running server."""
    server.set_zone(None)
    server.clear_switches()
    for name, entries in zonedata.items():
        _serve_name(server, name, entries or [])


def _serve_name(server: DnsServer, name: str, entries: list[Any]) -> None:
    present: set[str] = set()
    has_txt = any(isinstance(e, dict) and "TXT" in e for e in entries)
    timeout_all = False
    for entry in entries:
        if entry == "TIMEOUT":
            timeout_all = True
            continue
        for rtype, value in entry.items():
            if value == "TIMEOUT":
                server.drop(name, "TXT" if rtype == "SPF" else rtype)
                continue
            if value == "NONE" or value == ["NONE"]:
                continue   # no record; still stops TXT copies of SPF records
            if rtype == "SPF":
                if not has_txt:
                    _add(server, name, "TXT", value)
                    present.add("TXT")
                continue
            _add(server, name, rtype, value)
            present.add(rtype)
    if not present and not timeout_all:
        server.add_empty(name)
    if timeout_all:
        for rtype in ALL_TYPES:
            if rtype not in present:
                server.drop(name, rtype)


def _add(server: DnsServer, name: str, rtype: str, value: Any) -> None:
    server.add(name, rtype, value)
