#!/usr/bin/env python3
"""A Python MLLP listener doing the same work as Huizhen's `mllp` source: the baseline of the
`mllp` benchmark (adapters/hl7v2/benches/mllp.rs).

Needs python-hl7 (`pip install hl7==0.4.5`). For each frame it:

1. reads the block with `hl7.mllp` (asyncio; `start_hl7_server` / `MLLPStreamReader.readblock`),
2. decodes it (GB18030 by default, strict: invalid bytes are an error, as in the engine) and
   parses the whole message with `hl7.parse`,
3. reads the header (MSH-3, -4, -9, -10, -12) and builds the same headers and dedup key
   (`MSH-3|MSH-4|MSH-10`) as the engine,
4. journals it durably in SQLite: the engine's own `messages` table (same columns and the same
   four indexes), WAL, `synchronous=NORMAL` (survives kill -9, like the engine's default) or
   `FULL` with `--synchronous FULL`; the raw bytes are stored; the dedup key is looked up first
   (a resend with the same key and body is not stored twice),
5. only after the commit, answers with `message.create_ack("AA")`, encoded in the same charset.

Commits (`--commit`):
  group (default)  group commit: one writer coroutine takes every message waiting, looks their
                   dedup keys up in one query, inserts them with one executemany and commits
                   once, then wakes their connections (the same idea as the engine's journal).
  each             one transaction per message.

sqlite3 calls block the event loop while they run (simple and typical for an asyncio service);
with the GIL the whole server uses one core at most.

Protocol with the benchmark: prints `READY <port>` once listening; on a `stats` line on stdin
prints one JSON line with the number of rows stored; on `quit` (or end of input) prints that
line and exits. `--parse-rate FILE` only measures `decode + hl7.parse` on the message in FILE and
prints the rate.
"""

import argparse
import asyncio
import hashlib
import json
import sqlite3
import sys
import threading
import time
import uuid

import hl7
import hl7.mllp

SCHEMA = """
CREATE TABLE IF NOT EXISTS messages (
    id              TEXT PRIMARY KEY NOT NULL,
    facility        TEXT NOT NULL,
    pipeline        TEXT NOT NULL,
    kind            TEXT NOT NULL,
    body            BLOB NOT NULL,
    headers         TEXT NOT NULL,
    source          TEXT NOT NULL,
    received_at     INTEGER NOT NULL,
    trace_id        TEXT NOT NULL,
    dedup_key       TEXT,
    body_hash       TEXT,
    parent_id       TEXT,
    state           TEXT NOT NULL,
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at INTEGER,
    last_error      TEXT,
    updated_at      INTEGER NOT NULL
);
CREATE UNIQUE INDEX IF NOT EXISTS messages_dedup ON messages (pipeline, dedup_key, body_hash);
CREATE INDEX IF NOT EXISTS messages_due ON messages (next_attempt_at) WHERE next_attempt_at IS NOT NULL;
CREATE INDEX IF NOT EXISTS messages_pipeline_state ON messages (pipeline, state, id);
CREATE INDEX IF NOT EXISTS messages_state ON messages (state, id);
"""

INSERT = (
    "INSERT INTO messages (id, facility, pipeline, kind, body, headers, source, received_at, "
    "trace_id, dedup_key, body_hash, parent_id, state, attempts, updated_at) "
    "VALUES (?, 'default', 'bench', 'hl7v2', ?, ?, ?, ?, ?, ?, ?, NULL, 'received', 0, ?)"
)


def open_db(path, synchronous):
    db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute(f"PRAGMA synchronous={synchronous}")
    db.executescript(SCHEMA)
    return db


class Row:
    __slots__ = ("raw", "headers", "source", "dedup_key", "body_hash", "future")

    def __init__(self, raw, headers, source, dedup_key, future):
        self.raw = raw
        self.headers = headers
        self.source = source
        self.dedup_key = dedup_key
        self.body_hash = hashlib.sha256(raw).hexdigest()
        self.future = future


def store(db, rows):
    """Stores `rows` in one transaction; rows already stored (same key and body) are skipped."""
    now = int(time.time() * 1000)
    db.execute("BEGIN IMMEDIATE")
    try:
        keys = sorted({r.dedup_key for r in rows if r.dedup_key})
        known = set()
        for i in range(0, len(keys), 500):
            chunk = keys[i : i + 500]
            marks = ",".join("?" * len(chunk))
            for k, h in db.execute(
                f"SELECT dedup_key, body_hash FROM messages WHERE pipeline = 'bench' AND dedup_key IN ({marks})",
                chunk,
            ):
                known.add((k, h))
        fresh = []
        for r in rows:
            if (r.dedup_key, r.body_hash) in known:
                continue
            known.add((r.dedup_key, r.body_hash))
            mid = str(uuid.uuid4())
            fresh.append(
                (mid, r.raw, r.headers, r.source, now, mid, r.dedup_key, r.body_hash, now)
            )
        db.executemany(INSERT, fresh)
        db.execute("COMMIT")
    except BaseException:
        db.execute("ROLLBACK")
        raise


class GroupCommit:
    """One writer coroutine: takes every waiting row and commits them together."""

    def __init__(self, db):
        self.db = db
        self.pending = []
        self.wake = asyncio.Event()
        self.batches = 0
        self.rows = 0

    async def submit(self, row):
        self.pending.append(row)
        self.wake.set()
        await row.future

    async def run(self):
        while True:
            await self.wake.wait()
            # Let the connections that are ready add their message before committing.
            await asyncio.sleep(0)
            self.wake.clear()
            rows, self.pending = self.pending, []
            if not rows:
                continue
            try:
                store(self.db, rows)
                self.batches += 1
                self.rows += len(rows)
                for r in rows:
                    r.future.set_result(None)
            except Exception as e:  # noqa: BLE001 - every waiting sender must hear about it
                for r in rows:
                    r.future.set_exception(e)


class EachCommit:
    def __init__(self, db):
        self.db = db
        self.batches = 0
        self.rows = 0

    async def submit(self, row):
        store(self.db, [row])
        self.batches += 1
        self.rows += 1


def header_of(message):
    msh = message.segment("MSH")
    app, fac, ctrl = str(msh(3)), str(msh(4)), str(msh(10))
    headers = {
        "hl7-type": f"{msh(9)(1)(1)}^{msh(9)(1)(2)}",
        "hl7-control-id": ctrl,
        "hl7-version": str(msh(12)) or "2.5",
        "hl7-sending-application": app,
        "hl7-sending-facility": fac,
    }
    return headers, (f"{app}|{fac}|{ctrl}" if ctrl else None)


async def serve(args):
    db = open_db(args.db, args.synchronous)
    committer = GroupCommit(db) if args.commit == "group" else EachCommit(db)
    writer_task = asyncio.create_task(committer.run()) if args.commit == "group" else None
    loop = asyncio.get_running_loop()
    encoding = args.encoding

    async def handle(reader, writer):
        peer = writer.get_extra_info("peername")
        source = f"mllp {peer[0]}:{peer[1]}"
        try:
            while True:
                try:
                    raw = await reader.readblock()
                except asyncio.IncompleteReadError:
                    return
                text = raw.decode(encoding)  # strict, like on_invalid_charset: reject
                message = hl7.parse(text)
                headers, key = header_of(message)
                headers["hl7-charset"] = encoding
                row = Row(
                    raw,
                    json.dumps(headers, ensure_ascii=False),
                    source,
                    key,
                    loop.create_future(),
                )
                await committer.submit(row)
                writer.writemessage(message.create_ack("AA"))
                await writer.drain()
        except (ConnectionError, asyncio.CancelledError):
            return
        finally:
            writer.close()

    server = await hl7.mllp.start_hl7_server(
        handle, args.host, args.port, encoding=encoding, limit=16 * 1024 * 1024
    )
    print(f"READY {args.port}", flush=True)

    def count():
        n = db.execute("SELECT COUNT(*) FROM messages").fetchone()[0]
        return {"stored": n, "batches": committer.batches, "rows": committer.rows}

    done = asyncio.Event()

    def stdin_reader():
        for line in sys.stdin:
            cmd = line.strip()
            if cmd == "stats":
                loop.call_soon_threadsafe(lambda: print(json.dumps(count()), flush=True))
            elif cmd == "quit":
                break
        loop.call_soon_threadsafe(done.set)

    threading.Thread(target=stdin_reader, daemon=True).start()
    await done.wait()
    server.close()
    if writer_task:
        writer_task.cancel()
    print(json.dumps(count()), flush=True)


def parse_rate(path, encoding, seconds=1.0):
    raw = open(path, "rb").read()
    n = 0
    t0 = time.perf_counter()
    while True:
        for _ in range(200):
            m = hl7.parse(raw.decode(encoding))
            str(m.segment("MSH")(10))
        n += 200
        dt = time.perf_counter() - t0
        if dt >= seconds:
            return n / dt


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=2576)
    p.add_argument("--db", default="python-bench.db")
    p.add_argument("--encoding", default="gb18030")
    p.add_argument("--synchronous", choices=["NORMAL", "FULL"], default="NORMAL")
    p.add_argument("--commit", choices=["group", "each"], default="group")
    p.add_argument("--parse-rate", metavar="FILE")
    args = p.parse_args()
    if args.parse_rate:
        print(f"{parse_rate(args.parse_rate, args.encoding):.0f}", flush=True)
        return
    asyncio.run(serve(args))


if __name__ == "__main__":
    main()
