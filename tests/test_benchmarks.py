"""The benchmark scripts run, and their agreement checks pass (nothing here checks timings)."""
import json
import pathlib
import subprocess
import sys

BENCHMARKS = pathlib.Path(__file__).resolve().parent.parent / "benchmarks"


def test_lenet5_quick_on_the_host(tmp_path):
    result = subprocess.run([sys.executable, str(BENCHMARKS / "lenet5.py"), "--quick",
                             "--devices", "host", "--out", str(tmp_path)],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "OK: every row agrees with torch cpu" in result.stdout
    report = json.loads((tmp_path / "lenet5.json").read_text())
    assert report["failures"] == []
    rows = {(r["task"], r["dtype"], r["impl"]) for r in report["results"]}
    assert rows >= {(task, dtype, impl) for task in ("train", "inference")
                    for dtype in ("f32", "bf16") for impl in ("torch cpu", "vkgrad host")}
    assert all(r["check"]["ok"] for r in report["results"])
