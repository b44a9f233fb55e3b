"""The service client needs only the standard library: it imports with NumPy blocked, and
loads no third-party module (checked in a fresh interpreter)."""

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

PROBE = """
import json, sys
before = set(sys.modules)
sys.modules["numpy"] = None  # any `import numpy` now raises ImportError
import mespot.service.client
loaded = {m.split(".")[0] for m in set(sys.modules) - before if sys.modules[m] is not None}
print(json.dumps(sorted(loaded - set(sys.stdlib_module_names))))
"""


def test_the_client_imports_with_numpy_blocked():
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, env=env,
                          cwd=ROOT, timeout=120)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.splitlines()[-1]) == ["flowcore", "mespot"]
