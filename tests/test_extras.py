"""Optional packages (pyproject extras): a feature whose package is missing stops the command with one line
naming the extra that installs it. The import is made to fail by a package of the same name, earlier on the
path, that raises ImportError as a missing one does."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _without(tmp_path: Path, *modules: str) -> dict[str, str]:
    """An environment in which ``import <module>`` fails for each of ``modules``."""
    hidden = tmp_path / "hidden"
    for module in modules:
        (hidden / module).mkdir(parents=True)
        (hidden / module / "__init__.py").write_text(f"raise ImportError({f'No module named {module}'!r})\n")
    path = os.pathsep.join(filter(None, [str(hidden), str(ROOT), os.environ.get("PYTHONPATH")]))
    return {**os.environ, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "PYTHONPATH": path}


@pytest.mark.parametrize("module, options, message", [
    ("redis", ["--sink", "jsonl,redis://127.0.0.1:6379/0"],
     "error: --sink: redis:// sinks and live --control need the 'redis' extra: pip install 'xsam-pipeline[redis]'"),
    ("paho", ["--sink", "mqtt://127.0.0.1:1883/frames"],
     "error: --sink: mqtt:// sinks need the 'mqtt' extra: pip install 'xsam-pipeline[mqtt]'"),
    ("decord", ["--decoder", "decord"],
     "error: --decoder: the decord decoder needs the 'decord' extra: pip install 'xsam-pipeline[decord]'"),
])
def test_a_missing_extra_is_one_line_naming_it(tmp_path, module, options, message):
    result = subprocess.run([sys.executable, "-m", "pipeline.cli", "run", str(tmp_path / "a.mp4"), "--prompt",
                             "point:1,1", "--out", str(tmp_path / "out"), *options], capture_output=True, text=True,
                            timeout=120, env=_without(tmp_path, module), cwd=ROOT)
    assert result.returncode == 2
    assert result.stderr.strip() == message
    assert not (tmp_path / "out").exists()


def test_without_the_extras_the_file_sinks_and_pyav_still_run(tmp_path):
    from bench.clips import ClipSpec, make_clip

    clip = make_clip(ClipSpec(seed=2, num_frames=4), tmp_path / "clip.mp4")
    code = ("import sys; from pipeline.session import StreamSession; "
            "s = StreamSession.open(sys.argv[1], prompts=['point:10,10'], sinks=['jsonl'], out_dir=sys.argv[2]); "
            "print(len(list(s)), *(m in sys.modules for m in ('redis', 'paho.mqtt.client', 'decord')))")
    result = subprocess.run([sys.executable, "-c", code, str(clip.path), str(tmp_path / "out")], capture_output=True,
                            text=True, timeout=120, env=_without(tmp_path, "redis", "paho", "decord"),
                            cwd=ROOT)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["4", "False", "False", "False"]
