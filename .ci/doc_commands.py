"""Run the command blocks of README.md and docs/*.md, so a renamed option fails CI instead of
misleading a reader.

Every ```bash block carries a tag after the language:
  setup           README's two set-up commands (.ci/run runs them first)
  ci              run here, in the checkout, on the smoke run's results and cache
  needs-real-data / needs-cluster / needs-network / needs-gpu
                  listed, not run (the real-data slice of .ci/run covers the cpu profile)
A block without a tag fails. Blocks may use $IMAGES: a tiny image folder made here. Each block
starts from the smoke run's results (.mnv2results/latest.json as the set-up left it), as a
newcomer who runs it right after the set-up would.
    python .ci/doc_commands.py [--list]
"""
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RUN, SKIP = {"ci"}, {"setup", "needs-real-data", "needs-cluster", "needs-network", "needs-gpu"}
BLOCK = re.compile(r"^```bash(?P<tags>[^\n]*)\n(?P<body>.*?)^```", re.M | re.S)


def blocks() -> list[tuple[str, int, str, str]]:
    found = []
    for page in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        text = page.read_text()
        for match in BLOCK.finditer(text):
            line = text[:match.start()].count("\n") + 1
            found.append((str(page.relative_to(ROOT)), line, match["tags"].strip(), match["body"]))
    return found


def tiny_image_folder(root: Path) -> Path:
    """Two classes of 32 px images, 8 per class and split: the smallest folder the grid takes."""
    from PIL import Image
    for split in ("train", "test"):
        for label, colour in (("cat", (200, 60, 40)), ("dog", (40, 80, 200))):
            folder = root / split / label
            folder.mkdir(parents=True)
            for i in range(8):
                shade = tuple(min(255, c + 6 * i) for c in colour)
                Image.new("RGB", (32, 32), shade).save(folder / f"{i}.png")
    return root


def main(argv: list[str]) -> int:
    found = blocks()
    untagged = [f"{page}:{line}" for page, line, tags, _ in found if tags not in RUN | SKIP]
    if untagged:
        print(f"command blocks without a tag ({', '.join(sorted(RUN | SKIP))}): {', '.join(untagged)}", file=sys.stderr)
        return 1
    if "--list" in argv:
        for page, line, tags, body in found:
            print(f"{page}:{line} [{tags}] {body.strip().splitlines()[0]}")
        return 0
    env = {**os.environ, "IMAGES": str(tiny_image_folder(Path(tempfile.mkdtemp()) / "images"))}
    latest = ROOT / ".mnv2results" / "latest.json"
    smoke_run = latest.read_bytes() if latest.is_file() else None
    for page, line, tags, body in found:
        if tags not in RUN:
            print(f"- {page}:{line}: not run here ({tags})")
            continue
        if smoke_run is not None:
            latest.write_bytes(smoke_run)
        started = time.monotonic()
        print(f"+ {page}:{line}\n{body.rstrip()}", flush=True)
        result = subprocess.run(["bash", "-euo", "pipefail", "-c", body], cwd=ROOT, env=env)
        if result.returncode != 0:
            print(f"{page}:{line}: its command block failed (exit {result.returncode})", file=sys.stderr)
            return 1
        print(f"  ok in {time.monotonic() - started:.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
