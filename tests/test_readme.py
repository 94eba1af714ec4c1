"""The README's code example runs as printed, and CI runs exactly its two commands."""
import pathlib
import re

ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_readme_check_your_own_layer_example_runs(capsys):
    text = (ROOT / "README.md").read_text()
    block = re.search(r"```python\n(from hypothesis.*?)```", text, re.S).group(1)
    scope = {}
    exec(compile(block, "README.md", "exec"), scope)
    assert "Swish(): passed" in capsys.readouterr().out
    scope["test_swish"]()                       # the hypothesis property test itself


def test_ci_reads_its_commands_from_the_readme():
    text = (ROOT / "README.md").read_text()
    for marker in ("<!-- ci:install -->", "<!-- ci:test -->"):
        assert text.count(marker) == 1
    ci = (ROOT / ".ci" / "run").read_text()
    assert "ci:install" in ci and "ci:test" in ci and 'eval "$INSTALL"' in ci and 'eval "$TEST"' in ci
