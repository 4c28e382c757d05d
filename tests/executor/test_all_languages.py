"""All thirteen client languages through HTTP on real containers.

Per language: one program that prints hello, echoes its argv, reads an uploaded input from
/mnt/data and writes an output file (downloaded and compared byte for byte); a compile or
syntax error; an infinite loop stopped at a 2 s limit. Then R's Cairo PNG, a Java public class
not named Main, the aliases, an unknown language, and GET /runtimes.
"""

import pytest

LANGS = ("py", "js", "ts", "c", "cpp", "java", "php", "rs", "go", "d", "f90", "r", "bash")
ARGS = ["alpha", "two words", "-x"]
INPUT = b"a,1\nb,2\nc,3\n"

# Each prints "hello from <lang>", "args=<argv joined by |>", and writes "3 rows" to out.txt.
# The C-family and Fortran programs also call libm (the math library must be linked by default).
PROGRAMS = {
    "py": (
        "import sys\nprint('hello from py')\nprint('args=' + '|'.join(sys.argv[1:]))\n"
        "rows = open('/mnt/data/in.csv').read().split()\nopen('out.txt', 'w').write(f'{len(rows)} rows')\n"
    ),
    "js": (
        "const fs = require('fs');\nconsole.log('hello from js');\n"
        "console.log('args=' + process.argv.slice(2).join('|'));\n"
        "const rows = fs.readFileSync('/mnt/data/in.csv', 'utf8').trim().split('\\n');\n"
        "fs.writeFileSync('out.txt', `${rows.length} rows`);\n"
    ),
    "ts": (
        "import { readFileSync, writeFileSync } from 'fs';\n"
        "const args: string[] = process.argv.slice(2);\n"
        "console.log('hello from ts');\nconsole.log('args=' + args.join('|'));\n"
        "const rows: string[] = readFileSync('/mnt/data/in.csv', 'utf8').trim().split('\\n');\n"
        "writeFileSync('out.txt', `${rows.length} rows`);\n"
    ),
    "c": r"""#include <math.h>
#include <stdio.h>
int main(int argc, char **argv) {
    printf("hello from c\nargs=");
    for (int i = 1; i < argc; i++) printf(i > 1 ? "|%s" : "%s", argv[i]);
    printf("\n");
    FILE *in = fopen("/mnt/data/in.csv", "r");
    if (!in) { perror("in.csv"); return 1; }
    int n = 0, ch;
    while ((ch = fgetc(in)) != EOF) n += ch == '\n';
    fclose(in);
    FILE *out = fopen("out.txt", "w");
    fprintf(out, "%d rows", n);
    fclose(out);
    volatile double x = argc + 4.0;
    printf("math=%.4f\n", cbrt(x) + lgamma(x) - lgamma(x));
    return 0;
}
""",
    "cpp": r"""#include <cmath>
#include <fstream>
#include <iostream>
#include <string>
#include <vector>
int main(int argc, char **argv) {
    std::vector<std::string> args(argv + 1, argv + argc);
    std::cout << "hello from cpp\nargs=";
    for (size_t i = 0; i < args.size(); i++) std::cout << (i ? "|" : "") << args[i];
    std::cout << "\n";
    std::ifstream in("/mnt/data/in.csv");
    std::string line;
    int n = 0;
    while (std::getline(in, line)) n++;
    std::ofstream("out.txt") << n << " rows";
    volatile double x = argc + 4.0;
    std::cout << "math=" << std::cbrt(x) + std::lgamma(x) - std::lgamma(x) << "\n";
}
""",
    "java": """import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;

public class Main {
    public static void main(String[] args) throws Exception {
        System.out.println("hello from java");
        System.out.println("args=" + String.join("|", args));
        List<String> rows = Files.readAllLines(Path.of("/mnt/data/in.csv"));
        Files.writeString(Path.of("out.txt"), rows.size() + " rows");
    }
}
""",
    "php": (
        "<?php\necho \"hello from php\\n\";\necho 'args=' . implode('|', array_slice($argv, 1)) . \"\\n\";\n"
        "$rows = file('/mnt/data/in.csv', FILE_IGNORE_NEW_LINES | FILE_SKIP_EMPTY_LINES);\n"
        "file_put_contents('out.txt', count($rows) . ' rows');\n"
    ),
    "rs": """use std::fs;

fn main() {
    println!("hello from rs");
    let args: Vec<String> = std::env::args().skip(1).collect();
    println!("args={}", args.join("|"));
    let text = fs::read_to_string("/mnt/data/in.csv").expect("in.csv");
    fs::write("out.txt", format!("{} rows", text.lines().count())).expect("out.txt");
}
""",
    "go": """package main

import (
	"fmt"
	"os"
	"strings"
)

func main() {
	fmt.Println("hello from go")
	fmt.Println("args=" + strings.Join(os.Args[1:], "|"))
	data, err := os.ReadFile("/mnt/data/in.csv")
	if err != nil {
		panic(err)
	}
	rows := strings.Split(strings.TrimSpace(string(data)), "\\n")
	if err := os.WriteFile("out.txt", []byte(fmt.Sprintf("%d rows", len(rows))), 0o644); err != nil {
		panic(err)
	}
}
""",
    "d": """import std.array : join;
import std.conv : to;
import std.file : readText, write;
import std.stdio : writeln;
import std.string : splitLines, strip;

void main(string[] args) {
    writeln("hello from d");
    writeln("args=", args[1 .. $].join("|"));
    auto rows = readText("/mnt/data/in.csv").strip().splitLines();
    write("out.txt", to!string(rows.length) ~ " rows");
}
""",
    "f90": """program main
  implicit none
  integer :: i, n, ios
  character(len=256) :: arg, line, buf
  real :: x
  write(*, '(a)') 'hello from f90'
  write(*, '(a)', advance='no') 'args='
  do i = 1, command_argument_count()
    call get_command_argument(i, arg)
    if (i > 1) write(*, '(a)', advance='no') '|'
    write(*, '(a)', advance='no') trim(arg)
  end do
  write(*, '(a)') ''
  open(10, file='/mnt/data/in.csv', status='old', action='read')
  n = 0
  do
    read(10, '(a)', iostat=ios) line
    if (ios /= 0) exit
    n = n + 1
  end do
  close(10)
  write(buf, '(i0,a)') n, ' rows'
  open(11, file='out.txt', status='replace', access='stream', form='unformatted')
  write(11) trim(buf)
  close(11)
  x = real(command_argument_count()) + 5.0
  write(*, '(a,f0.4)') 'math=', bessel_j0(x) - bessel_j0(x) + x ** (1.0 / 3.0)
end program main
""",
    "r": (
        "args <- commandArgs(trailingOnly = TRUE)\ncat('hello from r\\n')\n"
        "cat('args=', paste(args, collapse = '|'), '\\n', sep = '')\n"
        "rows <- readLines('/mnt/data/in.csv')\ncat(length(rows), ' rows', file = 'out.txt', sep = '')\n"
    ),
    "bash": (
        'echo "hello from bash"\n(IFS="|"; echo "args=$*")\n'
        'printf "%s rows" "$(wc -l < /mnt/data/in.csv)" > out.txt\n'
    ),
}

# A compile error (compiled languages) or syntax error (the others), and a word of its message.
BROKEN = {
    "py": ("print('unclosed'\n", "SyntaxError"),
    "js": ("let x = ;\n", "Unexpected"),
    "ts": ("const x: number = ;\n", "Unexpected"),
    "c": ("int main(void) { return undeclared_name; }\n", "undeclared_name"),
    "cpp": ("int main() { return undeclared_name; }\n", "undeclared_name"),
    "java": ("public class Main { public static void main(String[] a) { undeclaredName(); } }\n", "undeclaredName"),
    "php": ("<?php\necho 'a'\necho 'b';\n", "syntax error"),
    "rs": ("fn main() { let x: i32 = undeclared_name; }\n", "undeclared_name"),
    "go": ("package main\n\nfunc main() { undeclaredName() }\n", "undeclaredName"),
    "d": ("void main() { undeclaredName(); }\n", "undeclaredName"),
    "f90": ("program main\n  implicit none\n  x = 1\nend program main\n", "no IMPLICIT type"),
    "r": ("x <- (1 + \n", "unexpected"),
    "bash": ("if then fi\n", "syntax error"),
}

# Loops forever (no side effects the optimiser could drop, no output that would fill the cap).
FOREVER = {
    "py": "while True:\n    pass\n",
    "js": "while (true) {}\n",
    "ts": "let n: number = 0;\nwhile (true) { n++; }\n",
    "c": "int main(void) { volatile unsigned long n = 0; for (;;) n++; }\n",
    "cpp": "int main() { volatile unsigned long n = 0; for (;;) n++; }\n",
    "java": "public class Main { public static void main(String[] a) { while (true) {} } }\n",
    "php": "<?php\nwhile (true) {}\n",
    "rs": "fn main() { loop {} }\n",
    "go": "package main\n\nfunc main() {\n\tfor {\n\t}\n}\n",
    "d": "void main() { ulong n = 0; while (true) { n++; } }\n",
    "f90": "program main\n  implicit none\n  integer, volatile :: n\n  n = 0\n  do\n    n = n + 1\n  end do\nend program main\n",
    "r": "repeat {}\n",
    "bash": "while :; do :; done\n",
}


def generated(result: dict) -> list[dict]:
    return [f for f in result["files"] if not f.get("inherited")]


def test_every_language_has_programs():
    assert set(PROGRAMS) == set(BROKEN) == set(FOREVER) == set(LANGS)


@pytest.mark.parametrize("lang", LANGS)
def test_hello_args_input_and_output(api, lang):
    uploaded = api.upload("in.csv", INPUT)
    ref = {"id": uploaded["files"][0]["fileId"], "session_id": uploaded["session_id"], "name": "in.csv"}
    result = api.exec(lang, PROGRAMS[lang], args=ARGS, files=[ref])
    assert result["run"]["code"] == 0, result
    assert result["language"] == lang
    lines = result["stdout"].splitlines()
    assert lines[0] == f"hello from {lang}", result
    assert lines[1] == "args=alpha|two words|-x", result
    if lang in ("c", "cpp", "f90"):
        assert lines[2].startswith("math=2"), result  # cbrt(8)
    assert result["stderr"] == "", result["stderr"]
    outputs = generated(result)
    assert [f["name"] for f in outputs] == ["out.txt"], result
    assert [f["id"] for f in result["files"] if f.get("inherited")] == [ref["id"]]
    body = api.get(f"/download/{result['session_id']}/{outputs[0]['id']}")
    assert body.status_code == 200
    assert body.content == b"3 rows"


@pytest.mark.parametrize("lang", LANGS)
def test_compile_or_syntax_error(api, lang):
    code, word = BROKEN[lang]
    result = api.exec(lang, code)  # api.exec asserts HTTP 200
    assert result["run"]["code"] not in (0, None), result
    assert not result["run"]["timed_out"], result
    assert word.lower() in result["stderr"].lower(), result["stderr"]
    assert "Time limit exceeded" not in result["stderr"]


@pytest.mark.parametrize("lang", LANGS)
def test_infinite_loop_is_stopped(api, lang):
    result = api.exec(lang, FOREVER[lang], timeout=2000)
    assert result["run"]["timed_out"] is True, result
    assert "Time limit exceeded" in result["stderr"], result["stderr"]
    assert "Compilation timed out" not in result["stderr"]
    assert result["run"]["code"] != 0


def test_r_draws_a_cairo_png(api):
    code = "library(Cairo)\nCairoPNG('plot.png')\nplot(1:10)\ninvisible(dev.off())\n"
    result = api.exec("r", code)
    assert result["run"]["code"] == 0, result
    outputs = generated(result)
    assert [f["name"] for f in outputs] == ["plot.png"], result
    body = api.get(f"/download/{result['session_id']}/{outputs[0]['id']}").content
    assert body[:8] == b"\x89PNG\r\n\x1a\n"
    assert body[12:16] == b"IHDR" and len(body) > 1000


JAVA_CLASSES = {
    "public": (
        "import java.util.Arrays;\n\npublic final class Greeter {\n"
        "    static String greet(String who) { return \"hello, \" + who; }\n"
        "    public static void main(String[] args) {\n"
        "        System.out.println(greet(String.join(\" and \", Arrays.asList(args))));\n    }\n}\n"
    ),
    # No public class: the file is named after the class that declares main (comments and
    # strings that mention a "class" do not count).
    "package-private": (
        "import java.util.*;\n\n// the helper class for names\nclass Names {\n"
        "    static String join(String[] a) { return String.join(\" and \", a); }\n}\n\n"
        "class Solution {\n    public static void main(String[] args) {\n"
        "        String unused = \"public class Nope\";\n"
        "        System.out.println(\"hello, \" + Names.join(args));\n    }\n}\n"
    ),
}


@pytest.mark.parametrize("kind", sorted(JAVA_CLASSES))
def test_java_class_not_named_main(api, kind):
    result = api.exec("java", JAVA_CLASSES[kind], args=["Ada", "Grace"])
    assert result["stdout"] == "hello, Ada and Grace\n", result
    assert result["stderr"] == ""
    assert generated(result) == []  # class files stay in the execution's /tmp


ALIASES = {
    "python": ("py", "print('hi from alias')"),
    "javascript": ("js", "console.log('hi from alias')"),
    "node": ("js", "console.log('hi from alias')"),
    "typescript": ("ts", "const s: string = 'hi from alias'; console.log(s);"),
    "sh": ("bash", "echo hi from alias"),
    "rust": ("rs", 'fn main() { println!("hi from alias"); }'),
    "golang": ("go", 'package main\nimport "fmt"\nfunc main() { fmt.Println("hi from alias") }\n'),
    "fortran": ("f90", "program p\n  print '(a)', 'hi from alias'\nend program p\n"),
    "rscript": ("r", "cat('hi from alias\\n')"),
    "c++": ("cpp", '#include <iostream>\nint main() { std::cout << "hi from alias\\n"; }\n'),
}


@pytest.mark.parametrize("alias", sorted(ALIASES))
def test_language_aliases(api, alias):
    key, code = ALIASES[alias]
    result = api.exec(alias, code)
    assert result["stdout"] == "hi from alias\n", result
    assert result["language"] == key


def test_unknown_language_is_400(api):
    response = api.post("/exec", json={"lang": "cobol", "code": "DISPLAY 'HI'."})
    assert response.status_code == 400
    assert response.json()["error"] == "Unsupported language: cobol"


def test_runtimes_lists_all_languages_with_versions(api):
    response = api.get("/runtimes")
    assert response.status_code == 200, response.text
    rows = {row["language"]: row for row in response.json()}
    assert set(rows) == set(LANGS)
    for lang in LANGS:
        version = rows[lang]["version"]
        assert isinstance(version, str) and version.strip(), (lang, version)
        assert version != "unknown" and any(ch.isdigit() for ch in version), (lang, version)
        assert "not found" not in version.lower() and "error" not in version.lower(), (lang, version)
