"""Compiles a Java source inside the sandbox: finds the class the file must be named after,
compiles it, and writes the launcher that runs it.

    java_main.py SOURCE LAUNCHER --run java FLAGS... --compile javac FLAGS...

javac wants a public class in a file of the same name, and `java` the class to start; both are
read from the code here, in the sandbox, under the execution's own CPU, memory and time limits
(the server does no per-request work on the code). The scan is linear whatever the code holds:
every search starts where the previous one ended, and no pattern backtracks.
"""

import os
import re
import shlex
import sys

# Possessive quantifiers (Python 3.11): no backtracking, each pattern linear in the text.
_JAVA_PUBLIC_CLASS = re.compile(r"\bpublic\s++(?:(?:final|abstract|strictfp)\s++)*+class\s++([A-Za-z_$][\w$]*+)")
_JAVA_CLASS = re.compile(r"(?<![.\w$])class\s++([A-Za-z_$][\w$]*+)")
_JAVA_MAIN = re.compile(r"\bstatic\s++(?:final\s++)?void\s++main\s*+\(")
_JAVA_NOISE_START = re.compile(r'//|/\*|"""|"|\'')
_JAVA_STRING_BODY = {'"': re.compile(r'(?:[^"\\\n]++|\\.)*+'), "'": re.compile(r"(?:[^'\\\n]++|\\.)*+")}


def _escapes_before(code: str, index: int) -> int:
    """How many backslashes come right before code[index] (each looked at once per quote)."""
    count = 0
    while index - count > 0 and code[index - count - 1] == "\\":
        count += 1
    return count


def _java_code_only(code: str) -> str:
    """`code` without comments and string, text-block and char literals (they may say
    "public class" too). One pass: every search starts where the previous one ended, so the
    cost is linear in len(code) whatever the code holds (an unclosed `/*` ends the scan)."""
    kept: list[str] = []
    position = 0
    while True:
        start = _JAVA_NOISE_START.search(code, position)
        if start is None:
            kept.append(code[position:])
            break
        kept.append(code[position:start.start()])
        token = start.group()
        if token == "//":
            end = code.find("\n", start.end())
        elif token == "/*":
            end = code.find("*/", start.end())
            end = -1 if end < 0 else end + 2
        elif token == '"""':
            end = start.end()
            while True:  # the closing quotes of a text block, not escaped ones
                end = code.find('"""', end)
                if end < 0 or _escapes_before(code, end) % 2 == 0:
                    break
                end += 1
            end = -1 if end < 0 else end + 3
        else:
            body = _JAVA_STRING_BODY[token].match(code, start.end())
            end = body.end() + (1 if code.startswith(token, body.end()) else 0)
        if end < 0:
            break
        kept.append(" ")
        position = end
    return "".join(kept)


def main_class(code: str) -> str:
    """The class to compile the file as and to run: javac wants a public class in a file of
    the same name; without one, the class declared last before `static void main(`."""
    code = _java_code_only(code)
    match = _JAVA_PUBLIC_CLASS.search(code)
    if match:
        return match.group(1)
    main = _JAVA_MAIN.search(code)
    if main:
        before = _JAVA_CLASS.findall(code, 0, main.start())
        if before:
            return before[-1]
    return "Main"


_IDENTIFIER = re.compile(r"[A-Za-z_$][\w$]{0,199}")


def main(argv: list[str]) -> None:
    source, launcher = argv[0], argv[1]
    run = argv[argv.index("--run") + 1 : argv.index("--compile")]
    compile_ = argv[argv.index("--compile") + 1 :]
    with open(source, encoding="utf-8", errors="surrogateescape") as handle:
        name = main_class(handle.read())
    if not _IDENTIFIER.fullmatch(name):
        sys.exit(f"error: the class name {name[:80]!r}... is longer than 200 characters")
    build = os.path.dirname(launcher)
    folder = os.path.join(build, "src")
    os.makedirs(folder, exist_ok=True)
    target = os.path.join(folder, f"{name}.java")
    with open(source, "rb") as src, open(target, "wb") as dst:
        dst.write(src.read())
    with open(launcher, "w") as out:
        out.write(f'#!/bin/sh\nexec {shlex.join([*run, name])} "$@"\n')
    os.chmod(launcher, 0o755)
    sys.stdout.flush()
    os.execvp(compile_[0], [*compile_, target])


if __name__ == "__main__":
    main(sys.argv[1:])
