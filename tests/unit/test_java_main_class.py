"""Finding the class to compile a Java source as: right on ordinary code, linear on hostile code.

The scan (docker/executor/java_main.py) runs inside the sandbox, under the execution's limits;
it used to run in the server, where the old comment/literal regex took ~7 s of CPU for 45 KB
of unclosed `/*`. Each hostile case below would take minutes to hours when quadratic; the
pytest-timeout of this module stops the run long before that.
"""

import importlib.util

import pytest

from tests.liveserver import ROOT

_spec = importlib.util.spec_from_file_location("java_main", ROOT / "docker" / "executor" / "java_main.py")
java_main = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(java_main)
java_main_class = java_main.main_class

pytestmark = pytest.mark.timeout(60)


@pytest.mark.parametrize("code,expected", [
    ("public class Hello { public static void main(String[] a) {} }", "Hello"),
    ("public final class Fin { }", "Fin"),
    ("class A {}\nclass B { static void main(String[] a) {} }", "B"),
    ("class Only { public static void main(String... args) {} }", "Only"),
    ("// public class Fake\npublic class Real {}", "Real"),
    ("/* public class Fake */ public class Real {}", "Real"),
    ('String s = "public class Fake"; public class Real {}', "Real"),
    ('char c = \'"\'; public class Real {}', "Real"),
    ('String t = """\n public class Fake\n"""; public class Real {}', "Real"),
    ('String e = "\\" public class Fake"; public class Real {}', "Real"),
    ("interface I {} enum E {} record R() {}", "Main"),
    ("", "Main"),
])
def test_ordinary_sources(code, expected):
    assert java_main_class(code) == expected


@pytest.mark.parametrize("hostile", [
    "/* " * 400_000,                     # unclosed comments, each start a new candidate
    '"' + "\\\\" * 500_000,               # an unclosed string of escapes
    "'" * 1_000_000,
    '"""' * 300_000,
    "/" * 1_000_000,
    "class " * 200_000 + "static void main(",
    "public " * 200_000,
])
def test_hostile_sources_finish(hostile):
    assert isinstance(java_main_class(hostile), str)
