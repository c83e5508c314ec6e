"""The system's apt sources, read and parsed in one place (pure but for `read_sources`).

Both files apt reads are understood: one-line `deb [options] URI SUITE COMPONENTS...` entries
(*.list) and deb822 stanzas (*.sources). Two callers: debootstrap needs the Debian mirror that
serves a suite (images.debootstrap), and the counting plugin build needs a deb-src twin of each of
this release's entries to fetch qemu's source package (counting.build).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

APT_SOURCES = Path("/etc/apt")
# One-line option names and their deb822 field names.
_OPTION_FIELDS = {"arch": "architectures", "signed-by": "signed-by", "trusted": "trusted"}


@dataclass(frozen=True)
class AptEntry:
    """One enabled apt source entry. `fields` has the deb822 field names in lower case (for
    one-line entries: their options under those names, lists space-separated); `stanza` is a
    deb822 entry's text as written ('' for one-line entries)."""

    types: tuple[str, ...]
    uris: tuple[str, ...]
    suites: tuple[str, ...]
    components: tuple[str, ...]
    fields: Mapping[str, str] = field(default_factory=dict)
    stanza: str = ""


def read_sources(root: Path = APT_SOURCES) -> dict[str, str]:
    """{file name: text} of sources.list and sources.list.d/*.{list,sources}, in apt's order."""
    files: dict[str, str] = {}
    for path in [root / "sources.list", *sorted((root / "sources.list.d").glob("*"))]:
        if path.suffix in (".list", ".sources") and path.is_file():
            files[path.name] = path.read_text(errors="replace")
    return files


def _deb822_fields(stanza: str) -> dict[str, str]:
    fields: dict[str, str] = {}
    key = ""
    for line in stanza.splitlines():
        if line.startswith("#") or not line.strip():
            continue
        if line[0].isspace():
            if key:
                fields[key] += " " + line.strip()
            continue
        key, _, value = line.partition(":")
        key = key.strip().lower()
        fields[key] = value.strip()
    return fields


def _one_line(line: str) -> AptEntry | None:
    match = re.match(r"^(deb|deb-src)\s+(?:\[([^]]*)\]\s+)?(.*)$", line.split("#", 1)[0].strip())
    if match is None:
        return None
    words = match.group(3).split()
    if len(words) < 3:
        return None
    fields: dict[str, str] = {}
    for option in (match.group(2) or "").split():
        key, _, value = option.partition("=")
        fields[_OPTION_FIELDS.get(key, key)] = value.replace(",", " ")
    return AptEntry((match.group(1),), (words[0],), (words[1],), tuple(words[2:]), fields)


def parse(files: Mapping[str, str]) -> list[AptEntry]:
    """The enabled entries of apt sources files ({name: text}; the suffix says the format), in
    the files' order."""
    entries: list[AptEntry] = []
    for name, text in files.items():
        if name.endswith(".sources"):
            for stanza in re.split(r"\n\s*\n", text):
                fields = _deb822_fields(stanza)
                if not fields or fields.get("enabled", "yes").lower() == "no":
                    continue
                types, uris, suites, components = (
                    tuple(fields.get(k, "").split())
                    for k in ("types", "uris", "suites", "components")
                )
                entries.append(AptEntry(types, uris, suites, components, fields, stanza))
        elif name.endswith(".list"):
            entries.extend(e for e in map(_one_line, text.splitlines()) if e is not None)
    return entries


def mirrors_from_sources(files: Mapping[str, str], suite: str) -> list[str]:
    """Mirror URIs that serve `suite` main, from apt sources files (name -> text). Security and
    updates suites and third-party repositories do not match."""
    found = [
        uri
        for entry in parse(files)
        if "deb" in entry.types and suite in entry.suites and "main" in entry.components
        for uri in entry.uris
    ]
    return list(dict.fromkeys(uri.rstrip("/") for uri in found))


def _release_suite(suite: str, codename: str) -> bool:
    return suite == codename or suite.startswith(codename + "-")


def _deb_src_twin(entry: AptEntry, suites: list[str]) -> str:
    if not entry.stanza:  # a one-line entry: write it as deb822
        lines = [
            "Types: deb-src",
            f"URIs: {' '.join(entry.uris)}",
            f"Suites: {' '.join(suites)}",
            f"Components: {' '.join(entry.components)}",
        ]
        for key in ("signed-by", "architectures", "trusted"):
            if key in entry.fields:
                lines.append(f"{key.title()}: {entry.fields[key]}")
        return "\n".join(lines)
    out: list[str] = []  # the stanza as written (keys embedded in Signed-By stay whole)
    for line in entry.stanza.splitlines():
        key = line.partition(":")[0].strip().lower() if line and not line[0].isspace() else ""
        if key == "types":
            out.append("Types: deb-src")
        elif key == "suites":
            out.append("Suites: " + " ".join(suites))
        else:
            out.append(line)
    return "\n".join(out)


def deb_src_sources(files: Mapping[str, str], codename: str) -> str:
    """A deb822 .sources text with a deb-src entry for each `deb` entry of this release
    (`codename` and its -updates/-security suites) in the apt sources files (name -> text, taken
    in name order). Third-party repositories (other suites) are left out: they carry no qemu
    source."""
    stanzas: list[str] = []
    for entry in parse(dict(sorted(files.items()))):
        suites = [s for s in entry.suites if _release_suite(s, codename)]
        if "deb" in entry.types and suites:
            stanzas.append(_deb_src_twin(entry, suites))
    return "\n\n".join(stanzas) + ("\n" if stanzas else "")
