"""Issue 2's languages through HTTP on real containers: hello world, an input file read from
/mnt/data, an output file written and downloaded."""

import pytest

PROGRAMS = {
    "py": (
        "import sys\nprint('hello from py', sys.argv[1:])\n"
        "rows = open('/mnt/data/in.csv').read().split()\nopen('out.txt', 'w').write(f'{len(rows)} rows')\n"
    ),
    "js": (
        "const fs = require('fs');\nconsole.log('hello from js', process.argv.slice(2).join(','));\n"
        "const rows = fs.readFileSync('/mnt/data/in.csv', 'utf8').trim().split('\\n');\n"
        "fs.writeFileSync('out.txt', `${rows.length} rows`);\n"
    ),
    "ts": (
        "import { readFileSync, writeFileSync } from 'fs';\nconst args: string[] = process.argv.slice(2);\n"
        "console.log('hello from ts', args.join(','));\n"
        "const rows: string[] = readFileSync('/mnt/data/in.csv', 'utf8').trim().split('\\n');\n"
        "writeFileSync('out.txt', `${rows.length} rows`);\n"
    ),
    "bash": 'echo "hello from bash $*"\nprintf "%s rows" "$(wc -l < /mnt/data/in.csv)" > out.txt\n',
}


@pytest.mark.parametrize("lang", sorted(PROGRAMS))
def test_hello_input_and_output(api, lang):
    uploaded = api.upload("in.csv", b"a,1\nb,2\nc,3\n")
    ref = {"id": uploaded["files"][0]["fileId"], "session_id": uploaded["session_id"], "name": "in.csv"}
    result = api.exec(lang, PROGRAMS[lang], args=["x", "y"], files=[ref])
    assert f"hello from {lang}" in result["stdout"], result
    assert "x" in result["stdout"] and "y" in result["stdout"]
    assert result["stderr"] == ""
    generated = [f for f in result["files"] if not f.get("inherited")]
    assert [f["name"] for f in generated] == ["out.txt"]
    inherited = [f for f in result["files"] if f.get("inherited")]
    assert [f["id"] for f in inherited] == [ref["id"]]
    body = api.get(f"/download/{result['session_id']}/{generated[0]['id']}")
    assert body.status_code == 200
    assert body.content == b"3 rows"


def test_cwd_home_and_environment(api):
    code = "import os, json; print(json.dumps({'cwd': os.getcwd(), 'home': os.environ.get('HOME'), 'uid': os.getuid(), 'env': sorted(os.environ)}))"
    import json

    seen = json.loads(api.exec("py", code)["stdout"])
    assert seen["cwd"] == "/mnt/data" and seen["home"] == "/mnt/data"
    assert seen["uid"] != 0
    assert not any(name.startswith(("SANDBOX_", "DJANGO_", "LIBRECHAT_", "MONGO_", "DATABASE_")) for name in seen["env"])


def test_matplotlib_headless_and_plt_show(api):
    code = (
        "import matplotlib.pyplot as plt\nplt.plot([1, 2, 3])\nplt.savefig('saved.png')\n"
        "plt.figure(); plt.bar([1, 2], [3, 4]); plt.show()\n"
    )
    result = api.exec("py", code)
    names = sorted(f["name"] for f in result["files"])
    # show() saves every open figure, the already-saved one included
    assert names == ["plot_1.png", "plot_2.png", "saved.png"], result
    for f in result["files"]:
        assert api.get(f"/download/{result['session_id']}/{f['id']}").content[:8] == b"\x89PNG\r\n\x1a\n"
    assert "Matplotlib" not in result["stderr"], result["stderr"]  # no cache rebuild warnings
