"""Where one worker's time goes while it drains the benchmark's backlog: py-spy over the whole
drain, then the top functions by own and by total on-CPU samples.

    .venv/bin/pip install py-spy      # once; py-spy needs ptrace (root, or ptrace_scope 0)
    .venv/bin/python bench/profile_drain.py [--customers 5000] [--out results/profile]

Needs a running stack (`tutti stack up`). Writes the raw samples (speedscope JSON, open them at
speedscope.app) and a text summary next to each other. The same backlog, topics and worker
settings as `tutti bench` (c), so the profile explains that number.
"""

from __future__ import annotations

import argparse
import collections
import json
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from orchestrator.bench.harness import delete_run, start_worker, stop_children_on_exit
from orchestrator.bench.run import (
    BenchOptions,
    bench_stream,
    drain_with_workers,
    prepare_run,
)
from orchestrator.codec import AvroCodec
from orchestrator.config import load_settings

ROOT = Path(__file__).resolve().parents[1]


def summarise(speedscope: Path, top: int) -> str:
    """Own and total on-CPU share per function from py-spy's speedscope output."""
    doc = json.loads(speedscope.read_text())
    frames = doc["shared"]["frames"]
    own: collections.Counter[int] = collections.Counter()
    total: collections.Counter[int] = collections.Counter()
    samples = 0
    for profile in doc["profiles"]:
        for stack, weight in zip(profile["samples"], profile["weights"], strict=True):
            samples += weight
            if stack:
                own[stack[-1]] += weight
            for frame in set(stack):
                total[frame] += weight

    def name(i: int) -> str:
        f = frames[i]
        where = f.get("file", "").replace(str(ROOT) + "/", "")
        for marker in ("site-packages/", "lib/python3"):
            if marker in where:
                where = where.split(marker, 1)[1]
        return f"{f['name']} ({where}:{f.get('line', '')})"

    lines = [f"{samples} samples"]
    for title, counter in (("own", own), ("total", total)):
        lines.append(f"\n== top {top} by {title} time")
        for i, n in counter.most_common(top):
            lines.append(f"{100 * n / samples:6.1f} %  {name(i)}")
    return "\n".join(lines)


def record_with_py_spy(
    pid: int, speedscope: Path, rate: int, seconds: float | None = None, native: bool = False
) -> subprocess.Popen[bytes]:
    """py-spy sampling ``pid`` at ``rate`` Hz into ``speedscope`` (until it exits, or for
    ``seconds``), without pausing it; ``native`` adds the C frames (time in the interpreter's
    and extensions' C code that no Python frame explains)."""
    spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    command = [spy, "record", "-p", str(pid), "-r", str(rate), "-f", "speedscope"]
    # py-spy reads C stacks only while the process is paused: --native samples in blocking mode.
    command += ["-o", str(speedscope)] + (["--native"] if native else ["--nonblocking"])
    if seconds is not None:
        command += ["-d", str(int(seconds))]
    return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--customers", type=int, default=5000)
    parser.add_argument("--events", type=int, default=None)
    parser.add_argument("--out", type=Path, default=ROOT / "results" / "profile")
    parser.add_argument("--top", type=int, default=45)
    args = parser.parse_args()
    stop_children_on_exit()
    base = load_settings()
    codec = AvroCodec.from_settings(base.kafka)
    stream = bench_stream(args.customers, args.events)
    options = BenchOptions(customers=args.customers, events=args.events)
    args.out.mkdir(parents=True, exist_ok=True)
    speedscope = args.out / "drain.speedscope.json"
    with tempfile.TemporaryDirectory(prefix="tutti-profile-") as tmp:
        settings = prepare_run(base, options, stream, codec, print)
        app_id = f"profile-worker-{uuid.uuid4().hex[:8]}"
        try:
            # Attach to the worker as soon as it runs; py-spy stops when it exits.
            recorder: subprocess.Popen[bytes] | None = None
            original = start_worker

            def start_and_record(*a: object, **kw: object):  # type: ignore[no-untyped-def]
                nonlocal recorder
                process = original(*a, **kw)  # type: ignore[arg-type]
                recorder = record_with_py_spy(process.popen.pid, speedscope, 200)
                return process

            import orchestrator.bench.run as run_module

            run_module.start_worker = start_and_record  # type: ignore[assignment]
            workers, seconds = drain_with_workers(settings, Path(tmp), app_id, 1, options, print)
            print(f"drained {len(stream)} events in {seconds:.1f} s: {len(stream) / seconds:.0f}/s")
            for w in workers:
                w.stop()
            if recorder is not None:
                recorder.wait(60)
        finally:
            delete_run(settings, [app_id])
    time.sleep(0.5)
    text = summarise(speedscope, args.top)
    (args.out / "drain.txt").write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
