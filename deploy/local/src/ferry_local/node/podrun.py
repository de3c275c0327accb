"""``python -m ferry_local.node.podrun RUN.json``: inside the pod's private mount namespace, bind each
volume at its mount path, then exec the container's program with exactly the pod's environment."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path


def main() -> None:
    spec = json.loads(Path(sys.argv[1]).read_text())
    for source, target in spec["mounts"]:
        if Path(source).is_dir():
            Path(target).mkdir(parents=True, exist_ok=True)
        else:
            Path(target).parent.mkdir(parents=True, exist_ok=True)
            Path(target).touch(exist_ok=True)
        subprocess.run(["mount", "--bind", source, target], check=True)
    argv: list[str] = spec["argv"]
    os.execve(argv[0], argv, spec["env"])


if __name__ == "__main__":
    main()
