"""Benchmark: a sender's consent ledger - how fast it reads ``tutti.consent`` at start, and the
memory each withdrawal it holds costs.

    .venv/bin/python bench/bench_consent.py [--records 100000]

Pure code, no broker: ``--records`` consent records (one customer each, three keys, every
other one an SMS marketing withdrawal) are decoded and applied to an SMS sender's ledger, as
the sender's consent thread does after each fetch; then the ledger's memory is measured with
tracemalloc on a second pass. The Kafka fetch itself is not timed. Prints and writes
results/bench_consent.json.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import tracemalloc
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from orchestrator.consent import ConsentSnapshot, decode_consent  # noqa: E402
from orchestrator.senders.consent import ConsentLedger  # noqa: E402

WEEK_MS = 7 * 24 * 3600 * 1000


def records(n: int, now_ms: int) -> list[tuple[bytes, bytes]]:
    out = []
    for i in range(n):
        customer = f"cust-{i:08d}-5f0c2a9e-41d7-4b7a"  # 36 characters, a UUID-sized id
        consent = {
            "sms:marketing": "opted_out" if i % 2 == 0 else "opted_in",
            "email:marketing": "opted_in",
            "email:transactional": "opted_in",
        }
        snapshot = ConsentSnapshot(customer, now_ms, consent, frozenset({"sms:marketing"}))
        out.append((customer.encode(), snapshot.encode()))
    return out


def read(data: list[tuple[bytes, bytes]]) -> ConsentLedger:
    ledger = ConsentLedger("sms", WEEK_MS)
    for key, value in data:
        snapshot = decode_consent(key, value)
        assert snapshot is not None
        ledger.apply(snapshot)
    return ledger


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--records", type=int, default=100_000)
    args, _ = parser.parse_known_args()  # make bench-micro passes every bench the same args
    data = records(args.records, int(time.time() * 1000))
    started = time.perf_counter()
    ledger = read(data)
    seconds = time.perf_counter() - started
    tracemalloc.start()
    held = read(data)
    memory, _ = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    result = {
        "records": args.records,
        "withdrawals_held": len(ledger),
        "read_seconds": round(seconds, 3),
        "records_per_second": round(args.records / seconds),
        "bytes_per_withdrawal": round(memory / len(held)),
    }
    print(
        f"{args.records:,} consent records read in {seconds:.2f} s "
        f"({result['records_per_second']:,}/s); {len(ledger):,} withdrawals held, "
        f"{result['bytes_per_withdrawal']} bytes each"
    )
    out = ROOT / "results" / "bench_consent.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
