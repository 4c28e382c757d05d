"""Smaller things the real LibreChat trips over: batch answers matched by filename, two files
of one name in a conversation, read-only inputs the code changes."""

import pytest


@pytest.mark.parametrize("names", [["0f1e2d3c4b5a69788796a5b4c3d2e1f0.png", "dir/a b.csv", "ünïcödé ✓.txt"],
                                   ["ok.txt", "../escape.txt", "a\\b.txt"]])
def test_batch_answers_echo_each_filename_as_sent(api, names):
    # LibreChat's image priming sends <file_id>.<ext> parts and finds its answer by filename.
    parts = [("file", (name, f"content of {name}".encode())) for name in names]
    response = api.post("/upload/batch", files=parts, headers={"User-Id": "user-1"})
    assert response.status_code == 200, response.text
    assert [item["filename"] for item in response.json()["files"]] == names


def test_two_files_of_one_name_stay_usable_side_by_side(api):
    first = api.upload("image.png", b"first version")
    second = api.upload("image.png", b"second version")

    def ref(up, name):
        return {"id": up["files"][0]["fileId"], "storage_session_id": up["session_id"], "name": name, "kind": "user",
                "resource_id": "user-1"}

    # LibreChat gives the older one an alias (<stem>-<hash><ext>): the requested name is honoured.
    both = api.exec("bash", "cat image.png; echo; cat image-3f9a2c.png",
                    files=[ref(second, "image.png"), ref(first, "image-3f9a2c.png")])
    assert both["stdout"] == "second version\nfirst version"
    # Sent under one name, or where one needs the other's path: the last wins, never a 400.
    same = api.exec("bash", "cat image.png", files=[ref(first, "image.png"), ref(second, "image.png")])
    assert same["stdout"] == "second version"
    nested = api.exec("bash", "cat image.png/inner.txt", files=[ref(first, "image.png"), ref(second, "image.png/inner.txt")])
    assert nested["stdout"] == "second version"


def test_a_read_only_input_the_code_changes_is_not_an_output(api):
    response = api.post("/upload/batch", data={"kind": "skill", "id": "skill_9", "version": "1", "read_only": "true"},
                        files=[("file", ("skills/tool/SKILL.md", b"# skill\n"))])
    up = response.json()
    ref = {"id": up["files"][0]["fileId"], "storage_session_id": up["session_id"], "name": "skills/tool/SKILL.md",
           "kind": "skill", "version": 1}
    result = api.exec("bash", "echo changed >> skills/tool/SKILL.md; cat skills/tool/SKILL.md", files=[ref])
    assert "changed" in result["stdout"]
    assert [f for f in result["files"] if not f.get("inherited")] == []
    assert [f["name"] for f in result["files"] if f.get("inherited")] == ["skills/tool/SKILL.md"]
