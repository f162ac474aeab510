"""Setting up the arm64 platform once: qemu's aarch64 user-mode emulator, an aarch64 Debian Python userland and
the aarch64 ai-edge-litert wheel with its requirements, in PLATFORMS/arm64 (PLATFORMS is $HUB_PLATFORMS_DIR, else
the hub cache's platforms/ folder).

Nothing is installed on the host and root is not needed. apt runs with a private configuration (its own lists,
cache and empty dpkg status under a scratch folder, the host's Debian mirror, APT::Architecture=arm64), so the
host's dpkg architectures and package state are untouched; packages are only downloaded and unpacked with
dpkg-deb -x. Wheels come through this Python's pip for the aarch64 platform tags.

The folder is built under a scratch name and renamed into place whole, with ready.json, the marker, written
before the rename: a reader sees a complete platform or none. A file lock makes concurrent prepares build once.

Facts this relies on (measured with qemu 7.2, Debian bookworm, ai-edge-litert 2.3.0):
- qemu 7.2 does not emulate /proc/cpuinfo; the interpreter's CPU detection reads the host's x86 one and
  segfaults. ROOT/proc/cpuinfo describing an ARM core fixes it: the -L prefix redirects the read there.
- qemu's default CPU ("max", with SVE) gives wrong int8 results through XNNPACK; cortex-a72/a53 die with SIGILL
  (the wheel needs ARMv8.2). neoverse-n1 (ARMv8.2 with dot product; AWS Graviton2, Ampere Altra) gives
  outputs byte-identical to x86, so it is pinned, and the cpuinfo written describes that core.
"""
from __future__ import annotations

import contextlib
import fcntl
import importlib.metadata as metadata
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import time
import uuid
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from hub.cache import default_cache_root
from hub.errors import MissingDependencyError, StepFailedError

PLATFORM = "arm64"
CPU_MODEL = "neoverse-n1"
QEMU = "qemu-aarch64-static"
# The litert the x86 backend pins (pyproject's tflite extra); the host's own version wins when installed, so both
# sides run the same release.
DEFAULT_LITERT_VERSION = "2.3.0"
MARKER = "ready.json"
# What the wheels link against beyond Python's own dependencies (recommended packages are not fetched: 38
# packages instead of 97). ai-edge-litert's shared library needs the C++ runtime.
RUNTIME_LIBRARIES = ("libstdc++6",)
HOST_SOURCES = (Path("/etc/apt/sources.list.d/debian.sources"), Path("/etc/apt/sources.list"))
# Used when the host has no Debian sources (e.g. an Ubuntu host, whose mirror has no arm64 packages).
FALLBACK_SOURCES = """Types: deb
URIs: http://deb.debian.org/debian
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: http://deb.debian.org/debian-security
Suites: bookworm-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
"""
DEBIAN_KEYRING = Path("/usr/share/keyrings/debian-archive-keyring.gpg")
# /proc/cpuinfo of an Arm Neoverse-N1 (implementer 0x41 Arm, part 0xd0c) as Linux prints it, one per processor.
CPUINFO_ENTRY = """processor\t: {index}
BogoMIPS\t: 50.00
Features\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm lrcpc dcpop asimddp ssbs
CPU implementer\t: 0x41
CPU architecture: 8
CPU variant\t: 0x3
CPU part\t: 0xd0c
CPU revision\t: 1
"""
CPUINFO_PROCESSORS = 64
OUTPUT_TAIL_CHARS = 3000


@dataclass(frozen=True)
class Platform:
    """A prepared arm64 platform: how to start its Python under emulation."""

    folder: Path
    qemu: Path
    qemu_version: str
    cpu: str
    python: str
    python_version: str
    litert_version: str
    description: str

    @property
    def root(self) -> Path:
        return self.folder / "root"

    @property
    def site(self) -> Path:
        return self.folder / "site"

    def python_command(self, *arguments: str) -> list[str]:
        """argv running the emulated Python (site disabled, isolated from the user's site-packages)."""
        return [str(self.qemu), "-L", str(self.root), "-cpu", self.cpu,
                str(self.root / "usr" / "bin" / self.python), "-S", "-s", *arguments]

    def environment(self) -> dict[str, str]:
        """A minimal environment: the host's Python variables must not leak into the aarch64 Python."""
        return {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "PYTHONPATH": str(self.site),
                "PYTHONNOUSERSITE": "1", "HOME": str(self.folder)}


def platforms_dir() -> Path:
    configured = os.environ.get("HUB_PLATFORMS_DIR")
    return Path(configured) if configured else default_cache_root() / "platforms"


def platform_folder() -> Path:
    return platforms_dir() / PLATFORM


def is_prepared() -> bool:
    """Whether prepare() has completed (its marker exists). Cheap: one stat."""
    return (platform_folder() / MARKER).is_file()


def load_platform() -> Platform:
    """The prepared platform; prepares it first when needed."""
    if not is_prepared():
        prepare()
    folder = platform_folder()
    marker = json.loads((folder / MARKER).read_text())
    qemu = Path(marker["qemu"])
    return Platform(folder=folder, qemu=qemu if qemu.is_absolute() else folder / qemu,
                    qemu_version=marker["qemu_version"], cpu=marker["cpu"], python=marker["python"],
                    python_version=marker["python_version"], litert_version=marker["litert_version"],
                    description=marker["description"])


def prepare() -> str:
    """Set the arm64 platform up unless it is already; return its one-line description. Idempotent. The first
    time it downloads about 110 MB (qemu's package, of which one 13 MB binary is kept unless qemu-aarch64-static
    is on PATH; 39 Debian packages, 16 MB; the wheels, 30 MB) and takes 15 s to a minute or two."""
    folder = platform_folder()
    folder.parent.mkdir(parents=True, exist_ok=True)
    with _locked(folder.parent / f".{PLATFORM}.lock"):
        if is_prepared():
            return json.loads((folder / MARKER).read_text())["description"]
        scratch = folder.parent / f".{PLATFORM}.{os.getpid()}.{uuid.uuid4().hex[:8]}"
        try:
            description = _build(scratch)
            if folder.exists():  # left without its marker (removed by hand to force a rebuild)
                stale = folder.parent / f".{PLATFORM}.stale.{uuid.uuid4().hex[:8]}"
                folder.rename(stale)
                shutil.rmtree(stale, ignore_errors=True)
            scratch.rename(folder)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
    return description


def _build(scratch: Path) -> str:
    started = time.monotonic()
    for tool in ("apt-get", "apt-cache", "dpkg-deb"):
        if not shutil.which(tool):
            raise MissingDependencyError(
                f"setting up the arm64 platform needs {tool} (a Debian-based host): it downloads an aarch64 "
                "Debian userland with apt and unpacks it with dpkg-deb")
    apt = PrivateApt(scratch / "apt")
    root, site = scratch / "root", scratch / "site"
    _progress("updating private apt lists (arm64 and " + apt.host_architecture + ")")
    apt.update()

    qemu_on_path = shutil.which(QEMU)
    if qemu_on_path:
        qemu = Path(qemu_on_path).resolve()
        qemu_recorded = str(qemu)
    else:
        _progress("fetching qemu-user-static")
        qemu = scratch / "bin" / QEMU
        _extract_member(apt.download(f"qemu-user-static:{apt.host_architecture}"), f"usr/bin/{QEMU}", qemu)
        qemu_recorded = f"bin/{QEMU}"
    qemu_version = _run([str(qemu), "--version"]).splitlines()[0]

    python = apt.default_python()
    debs = apt.fetch(python, *RUNTIME_LIBRARIES)
    _progress(f"unpacking {len(debs)} packages")
    root.mkdir(parents=True)
    for deb in debs:
        _run(["dpkg-deb", "-x", str(deb), str(root)])
    _relative_symlinks(root)
    (root / "proc").mkdir(exist_ok=True)
    (root / "proc" / "cpuinfo").write_text(
        "\n".join(CPUINFO_ENTRY.format(index=i) for i in range(CPUINFO_PROCESSORS)))
    glibc = apt.glibc_version(debs)
    shutil.rmtree(apt.folder)

    python_version = python.removeprefix("python")
    litert_version = _host_version("ai-edge-litert") or DEFAULT_LITERT_VERSION
    _fetch_wheels(site, python_version, glibc, litert_version, scratch / "wheels")

    platform = Platform(folder=scratch, qemu=qemu, qemu_version=qemu_version, cpu=CPU_MODEL, python=python,
                        python_version="", litert_version="", description="")
    _progress(f"checking {python} and ai-edge-litert under emulation")
    probe = ("import importlib.metadata as m, platform, sys; import ai_edge_litert.interpreter; "
             "print(platform.machine(), platform.python_version(), m.version('ai-edge-litert'))")
    machine, full_python_version, emulated_litert = _run(
        platform.python_command("-c", probe), env=platform.environment()).split()[-3:]
    qemu_release = re.search(r"version (\S+)", qemu_version)
    description = (f"{machine} Python {full_python_version}, ai-edge-litert {emulated_litert}, on qemu "
                   f"{qemu_release.group(1) if qemu_release else qemu_version} user mode -cpu {CPU_MODEL}")
    marker = {"platform": PLATFORM, "qemu": qemu_recorded, "qemu_version": qemu_version, "cpu": CPU_MODEL,
              "python": python, "python_version": full_python_version, "litert_version": emulated_litert,
              "glibc": glibc, "packages": len(debs), "description": description,
              "prepared_seconds": round(time.monotonic() - started, 1)}
    temporary = scratch / f".{MARKER}.tmp"
    temporary.write_text(json.dumps(marker, indent=2) + "\n")
    temporary.rename(scratch / MARKER)
    _progress(f"ready in {marker['prepared_seconds']:.0f} s: {description}")
    return description


class PrivateApt:
    """apt-get and apt-cache with their own lists, cache, empty dpkg status and sources: the host is untouched."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.host_architecture = _run(["dpkg", "--print-architecture"]).strip() if shutil.which("dpkg") else "amd64"
        for sub in ("lists/partial", "cache/archives/partial", "sources", "preferences", "downloads"):
            (folder / sub).mkdir(parents=True, exist_ok=True)
        (folder / "status").touch()
        (folder / "sources" / "debian.sources").write_text(host_debian_sources())
        self.options = [
            f"Dir::State={folder}", f"Dir::State::lists={folder / 'lists'}", f"Dir::State::status={folder / 'status'}",
            f"Dir::Cache={folder / 'cache'}", "Dir::Etc::sourcelist=/dev/null",
            f"Dir::Etc::sourceparts={folder / 'sources'}", f"Dir::Etc::preferencesparts={folder / 'preferences'}",
            "Dir::Etc::preferences=/dev/null", "APT::Architecture=arm64", "APT::Architectures::=arm64",
            f"APT::Architectures::={self.host_architecture}", "Acquire::Languages=none",
            "APT::Install-Recommends=false", "Debug::NoLocking=true",
        ]
        if os.geteuid() == 0:  # root's apt downloads as user _apt, who cannot write into a folder made by root
            self.options.append("APT::Sandbox::User=root")

    def command(self, tool: str, *arguments: str) -> list[str]:
        return [tool, "-q", *[part for option in self.options for part in ("-o", option)], *arguments]

    def update(self) -> None:
        _run(self.command("apt-get", "update"))

    def default_python(self) -> str:
        """The python3.X that the arm64 python3 package depends on (python3.11 on bookworm)."""
        listing = _run(self.command("apt-cache", "depends", "python3:arm64"))
        found = re.search(r"Depends: <?(python3\.\d+)>?\s*$", listing, re.MULTILINE)
        if not found:
            raise StepFailedError("the arm64 package lists name no python3.X for python3", detail=listing)
        return found.group(1)

    def fetch(self, *packages: str) -> list[Path]:
        """Download the arm64 packages and everything they depend on (an empty status: nothing is installed)."""
        names = [f"{package}:arm64" for package in packages]
        uris = _run(self.command("apt-get", "install", "--print-uris", "-y", "-qq", *names))
        sizes = [int(line.split()[2]) for line in uris.splitlines() if line.startswith("'")]
        _progress(f"fetching {' '.join(packages)} ({len(sizes)} packages, {sum(sizes) / 1e6:.0f} MB)")
        _run(self.command("apt-get", "install", "--download-only", "-y", *names))
        return sorted((self.folder / "cache" / "archives").glob("*.deb"))

    def download(self, package: str) -> Path:
        """One package's .deb (any architecture), downloaded into this folder without installing it."""
        target = self.folder / "downloads"
        _run(self.command("apt-get", "download", package), cwd=target)
        debs = sorted(target.glob("*.deb"))
        if not debs:
            raise StepFailedError(f"apt-get download {package} wrote no .deb")
        return debs[-1]

    @staticmethod
    def glibc_version(debs: list[Path]) -> str:
        for deb in debs:
            found = re.match(r"libc6_(\d+)\.(\d+)", deb.name)
            if found:
                return f"{found.group(1)}.{found.group(2)}"
        raise StepFailedError("the arm64 userland has no libc6 package", detail=", ".join(d.name for d in debs))


def host_debian_sources() -> str:
    """The host's Debian sources in deb822 form (its mirror and suites), else deb.debian.org bookworm."""
    deb822, one_line = HOST_SOURCES
    if deb822.is_file():
        return deb822.read_text()
    if one_line.is_file():
        entries = []
        for line in one_line.read_text().splitlines():
            parts = re.sub(r"\[[^]]*\]", "", line).split()
            if len(parts) >= 4 and parts[0] == "deb" and "debian" in parts[1]:
                entries.append(f"Types: deb\nURIs: {parts[1]}\nSuites: {parts[2]}\nComponents: "
                               f"{' '.join(parts[3:])}\nSigned-By: {DEBIAN_KEYRING}\n")
        if entries:
            return "\n".join(entries)
    if not DEBIAN_KEYRING.is_file():
        raise MissingDependencyError(
            "the host has no Debian apt sources, and the Debian archive keyring to check deb.debian.org is "
            f"missing ({DEBIAN_KEYRING}): apt-get install debian-archive-keyring")
    return FALLBACK_SOURCES


def _fetch_wheels(site: Path, python_version: str, glibc: str, litert_version: str, downloads: Path) -> None:
    """The aarch64 wheels of ai-edge-litert and its requirements, unpacked into site/. numpy is pinned to the
    host's version so that the quantize and dequantize arithmetic runs in the same numpy on both sides."""
    major, minor = (int(part) for part in glibc.split("."))
    platforms = ["manylinux2014_aarch64"] + [f"manylinux_2_{m}_aarch64" for m in range(17, minor + 1)]
    tag = "cp" + python_version.replace(".", "")
    requirements = [f"ai-edge-litert=={litert_version}"]
    numpy_version = _host_version("numpy")
    if numpy_version:
        requirements.append(f"numpy=={numpy_version}")
    _progress(f"fetching aarch64 wheels for Python {python_version}: {', '.join(requirements)} and requirements")
    command = [sys.executable, "-m", "pip", "download", "--quiet", "--disable-pip-version-check",
               "--only-binary=:all:", "--implementation", "cp", "--python-version", python_version, "--abi", tag,
               "--abi", "abi3", "--abi", "none", *[part for p in platforms for part in ("--platform", p)],
               "--dest", str(downloads), *requirements]
    _run(command, missing=MissingDependencyError(
        f"pip is needed to fetch the aarch64 wheels: {sys.executable} -m ensurepip"))
    site.mkdir(parents=True)
    for wheel in sorted(downloads.glob("*.whl")):
        with zipfile.ZipFile(wheel) as archive:
            archive.extractall(site)
    shutil.rmtree(downloads)


def _extract_member(deb: Path, member: str, destination: Path) -> None:
    """One file out of a .deb (dpkg-deb --fsys-tarfile; the rest of the package is not unpacked)."""
    destination.parent.mkdir(parents=True, exist_ok=True)
    # dpkg-deb complains of a broken pipe when the rest of the archive is not read: not an error here
    with subprocess.Popen(["dpkg-deb", "--fsys-tarfile", str(deb)], stdout=subprocess.PIPE,
                          stderr=subprocess.DEVNULL) as process:
        assert process.stdout is not None
        with tarfile.open(fileobj=process.stdout, mode="r|") as archive:
            for entry in archive:
                if entry.name.removeprefix("./") == member and entry.isfile():
                    source = archive.extractfile(entry)
                    assert source is not None
                    with open(destination, "wb") as target:
                        shutil.copyfileobj(source, target)
                    break
        process.stdout.close()
    if not destination.is_file():
        raise StepFailedError(f"{deb.name} holds no {member}")
    destination.chmod(0o755)


def _relative_symlinks(root: Path) -> None:
    """Absolute links in the userland (/usr/lib/python3.11/sitecustomize.py -> /etc/python3.11/...) would point
    into the host once followed; make each relative, inside the root."""
    for path in root.rglob("*"):
        if path.is_symlink():
            target = os.readlink(path)
            if target.startswith("/"):
                path.unlink()
                path.symlink_to(os.path.relpath(root / target.lstrip("/"), path.parent))


def _host_version(distribution: str) -> str | None:
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return None


def _run(command: list[str], cwd: Path | None = None, env: dict[str, str] | None = None,
         missing: Exception | None = None) -> str:
    try:
        completed = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True)
    except FileNotFoundError as error:
        raise (missing or MissingDependencyError(f"{command[0]} is not installed")) from error
    if completed.returncode != 0:
        output = (completed.stdout + completed.stderr)[-OUTPUT_TAIL_CHARS:]
        if missing is not None and "No module named pip" in output:
            raise missing
        raise StepFailedError(f"setting up the arm64 platform failed: {_shown(command)} exited with "
                              f"{completed.returncode}", detail=output)
    return completed.stdout


def _shown(command: list[str]) -> str:
    """The command without its -o options (the private apt configuration is long and always the same)."""
    shown = [Path(command[0]).name]
    for previous, part in zip(command, command[1:]):
        if part != "-o" and previous != "-o":
            shown.append(part)
    return " ".join(shown)


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _progress(message: str) -> None:
    print(f"{PLATFORM}: {message}…", file=sys.stderr, flush=True)
