"""Run the fault suite (tests/faults) and print its table: case, exit code, message, committed
samples before / after.

    python bench/fault_table.py [-k EXPR]     # extra arguments go to pytest

The table is what issue 10 asks for; every row comes from an assertion-checked test.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> int:
    with tempfile.TemporaryDirectory() as tmp:
        table = Path(tmp) / "rows.jsonl"
        env = dict(os.environ, MSEKIT_FAULT_TABLE=str(table))
        rc = subprocess.call([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                              str(ROOT / "tests" / "faults"), *sys.argv[1:]], env=env, cwd=ROOT)
        rows = [json.loads(x) for x in table.read_text().splitlines()] if table.exists() else []
    print("\n| case | exit | message | committed before | after |\n|---|---|---|---|---|")
    for r in rows:
        msg = re.sub(r"/tmp/pytest-of-[^/]+/pytest-\d+/", ".../", r["message"]).replace("|", "\\|")
        print(f"| {r['case']} | {r['exit']} | {msg} | {r['before']} | {r['after']} |")
    return rc


if __name__ == "__main__":
    raise SystemExit(main())
