"""The README's Python example runs as written (its run folder moved into a temp folder)."""
import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def test_the_readme_python_example_runs(tmp_path, capsys):
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    assert len(blocks) == 1, "the README has one Python example"
    code = blocks[0].replace("/tmp/runs", str(tmp_path / "runs"))
    exec(compile(code, "README.md", "exec"), {})
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("torch.Size([8, 10])")  # logits [B, K]
    assert 0.0 <= float(lines[1]) <= 100.0  # final top-1, percent
    assert float(lines[2].split()[0]) > 0 and lines[2].endswith("mJ per inference")
    assert any((tmp_path / "runs").iterdir())
