"""The language table: one row per language the clients may send (spec §6).

A row says how a program is laid out and started inside the executor image. `{src}` is the
source file under /mnt/code (read-only), `{out}` a build product in the execution's own /tmp.
Compiled languages run `compile` (its own time limit) and then `run`; `args` are appended
to `run`. Toolchains come from docker/Dockerfile.executor; versions are probed at start-up.
"""

from __future__ import annotations

from dataclasses import dataclass, field

CODE_DIR = "/mnt/code"
BUILD_DIR = "/tmp/build"
# Read-only caches made at image build by docker/executor/prepare-caches.sh (built with the
# same compiler flags as below; a missing or stale cache only costs time, never an error).
CXX_PCH_DIR = "/opt/sandbox/cxx-pch"
JAVAC_CDS_ARCHIVE = "/opt/sandbox/java/javac.jsa"
# Finds the class a Java file must be compiled as, in the sandbox (docker/executor/java_main.py).
JAVA_HELPER = "/opt/sandbox/bin/java_main.py"


@dataclass(frozen=True)
class Language:
    key: str
    aliases: tuple[str, ...]
    source: str
    run: tuple[str, ...]
    version: tuple[str, ...]
    compile: tuple[str, ...] = ()
    notes: str = ""
    extra: dict = field(default_factory=dict)

    def fill(self, argv: tuple[str, ...], source: str) -> list[str]:
        return [
            part.replace("{src}", f"{CODE_DIR}/{source}").replace("{out}", f"{BUILD_DIR}/main")
            for part in argv
        ]


LANGUAGES: tuple[Language, ...] = (
    Language("py", ("python", "python3", "py3"), "main.py", ("python3", "{src}"), ("python3", "--version")),
    Language("js", ("javascript", "node", "nodejs", "bun", "bun-js"), "index.js", ("bun", "{src}"), ("bun", "--version")),
    Language("ts", ("typescript", "bun-ts"), "main.ts", ("bun", "{src}"), ("bun", "--version")),
    Language("bash", ("sh", "shell"), "script.sh", ("bash", "{src}"), ("bash", "--version")),
    Language(
        "c", ("gcc",), "main.c", ("{out}",), ("gcc", "--version"),
        compile=("gcc", "-O2", "-pipe", "-o", "{out}", "{src}", "-lm"),
    ),
    Language(
        "cpp", ("c++", "g++", "cxx"), "main.cpp", ("{out}",), ("g++", "--version"),
        # -I: the image's precompiled <iostream> and <bits/stdc++.h> (prepare-caches.sh)
        compile=("g++", "-O2", "-pipe", "-I", CXX_PCH_DIR, "-o", "{out}", "{src}", "-lm"),
    ),
    Language(
        # javac names the file after its public class: java_main.py reads that from the code
        # inside the sandbox, compiles, and leaves {out} as the launcher of that class.
        "java", (), "Main.java", ("{out}",), ("javac", "-version"),
        compile=(
            "python3", JAVA_HELPER, "{src}", "{out}",
            "--run", "java", "-Xshare:auto", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1", "-cp", BUILD_DIR,
            "--compile", "javac", "-J-Xshare:auto", f"-J-XX:SharedArchiveFile={JAVAC_CDS_ARCHIVE}", "-J-XX:+UseSerialGC",
            "-J-XX:TieredStopAtLevel=1", "-d", BUILD_DIR,
        ),
    ),
    Language("php", (), "main.php", ("php", "{src}"), ("php", "--version")),
    Language(
        "rs", ("rust", "rustc"), "main.rs", ("{out}",), ("rustc", "--version"),
        # strip=debuginfo: std's debug info is not copied into every binary (a third of the link)
        compile=("rustc", "-C", "opt-level=1", "-C", "strip=debuginfo", "-o", "{out}", "{src}"),
    ),
    Language(
        "go", ("golang",), "main.go", ("{out}",), ("go", "version"),
        compile=("go", "build", "-o", "{out}", "{src}"),
    ),
    Language(
        "d", ("dlang", "gdc"), "main.d", ("{out}",), ("gdc", "--version"),
        compile=("gdc", "-O1", "-o", "{out}", "{src}"),
    ),
    Language(
        "f90", ("fortran", "gfortran", "f95"), "main.f90", ("{out}",), ("gfortran", "--version"),
        compile=("gfortran", "-O2", "-o", "{out}", "{src}", "-lm"),
    ),
    Language("r", ("rscript", "R"), "main.r", ("Rscript", "{src}"), ("Rscript", "--version")),
)

_BY_NAME = {name.lower(): lang for lang in LANGUAGES for name in (lang.key, *lang.aliases)}


def find_language(name: object) -> Language | None:
    return _BY_NAME.get(name.strip().lower()) if isinstance(name, str) else None
