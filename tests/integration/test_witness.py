"""The real `vipd witness` process on loopback (no root needed), driven by EmbeddedBackend clients
and by raw datagrams. The witness's counters are read from its JSON log: SIGUSR1 makes it log a
`stats` event. Nothing here is timed: every wait is for a condition, with a generous timeout."""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from vipd.witness.base import Op, Reply, Request, Result
from vipd.witness.embedded import EmbeddedBackend
from vipd.witness.proto import decode_reply, encode_request

WAIT = 30.0  # seconds: generous, only ever reached when something is broken
TTL = 30.0  # long enough that no lease expires by accident on a slow machine


class Witness:
    """One `vipd witness` process, its log in a file."""

    def __init__(self, workdir: Path, key_file: Path, port: int = 0, leases: str = "web") -> None:
        self.workdir = workdir
        self.state = workdir / "state.json"
        self.log_path = workdir / f"witness-{time.monotonic_ns()}.log"
        cmd = [sys.executable, "-m", "vipd", "witness", "--listen", f"127.0.0.1:{port}"]
        cmd += ["--state", str(self.state), "--key-file", str(key_file)]
        for lease in leases.split():
            cmd += ["--lease", lease]
        cmd += ["--log-format", "json", "--log-level", "debug"]
        with self.log_path.open("wb") as log:
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
        self.port: int = self.wait_event("listening")["port"]
        self.address = ("127.0.0.1", self.port)

    def events(self, name: str | None = None) -> list[dict[str, Any]]:
        found = []
        for line in self.log_path.read_text().splitlines():
            try:
                event = json.loads(line)
            except ValueError:
                continue
            if name is None or event.get("event") == name:
                found.append(event)
        return found

    def wait_event(
        self, name: str, where: Callable[[dict[str, Any]], bool] = lambda e: True, after: int = 0
    ) -> dict[str, Any]:
        """The first `name` event (past the first `after` ones) that satisfies `where`."""
        deadline = time.monotonic() + WAIT
        while time.monotonic() < deadline:
            matching = [e for e in self.events(name)[after:] if where(e)]
            if matching:
                return matching[0]
            if self.proc.poll() is not None:
                pytest.fail(
                    f"witness exited ({self.proc.returncode}):\n{self.log_path.read_text()}"
                )
            time.sleep(0.02)
        pytest.fail(f"no {name} event in {WAIT} s:\n{self.log_path.read_text()}")

    def counters(self) -> dict[str, int]:
        seen = len(self.events("stats"))
        self.proc.send_signal(signal.SIGUSR1)
        counters: dict[str, int] = self.wait_event("stats", after=seen)["counters"]
        return counters

    def stop(self, sig: int = signal.SIGTERM) -> int:
        self.proc.send_signal(sig)
        return self.proc.wait(timeout=WAIT)


class Client:
    """An EmbeddedBackend for one node, with a blocking-style ask()."""

    _ids = itertools.count(1)

    def __init__(self, address: tuple[str, int], key: bytes, node: str) -> None:
        self.backend = EmbeddedBackend(address, key, node)
        self.replies: dict[int, Reply] = {}
        self._arrived = asyncio.Event()

    async def __aenter__(self) -> Client:
        await self.backend.start(self._on_reply)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.backend.close()

    def _on_reply(self, reply: Reply) -> None:
        self.replies[reply.req_id] = reply
        self._arrived.set()

    async def ask(self, op: Op, epoch: int = 0, ttl: float = TTL, lease: str = "web") -> Reply:
        """Send, and resend (a new req_id, as the lease core does) until answered."""
        sent: list[int] = []
        deadline = time.monotonic() + WAIT
        while time.monotonic() < deadline:
            req_id = next(self._ids)
            sent.append(req_id)
            self.backend.send(Request(op, lease, req_id, ttl, epoch))
            self._arrived.clear()
            with_reply = [self.replies[i] for i in sent if i in self.replies]
            if not with_reply:
                try:
                    await asyncio.wait_for(self._arrived.wait(), 2.0)
                except TimeoutError:
                    continue
                with_reply = [self.replies[i] for i in sent if i in self.replies]
            if with_reply:
                return with_reply[0]
        pytest.fail(f"no reply to {op} from the witness in {WAIT} s")


@pytest.fixture
def key_file(tmp_path: Path) -> Path:
    path = tmp_path / "witness.key"
    path.write_bytes(base64.b64encode(os.urandom(32)) + b"\n")
    return path


@pytest.fixture
def witnesses(tmp_path: Path, key_file: Path) -> Iterator[Callable[..., Witness]]:
    """Start witnesses; any still running at the end are stopped, and their logs printed."""
    started: list[Witness] = []

    def start(**kw: Any) -> Witness:
        witness = Witness(tmp_path, key_file, **kw)
        started.append(witness)
        return witness

    yield start
    for witness in started:
        if witness.proc.poll() is None:
            witness.proc.kill()
            witness.proc.wait(timeout=WAIT)
        print(witness.log_path.read_text())


def key_of(key_file: Path) -> bytes:
    return key_file.read_bytes().strip()


# ---- leases ---------------------------------------------------------------------------------


def test_grant_refuse_renew_release(witnesses: Callable[..., Witness], key_file: Path) -> None:
    witness = witnesses()
    key = key_of(key_file)

    async def scenario() -> tuple[dict[str, int], dict[str, int]]:
        async with (
            Client(witness.address, key, "lb1") as lb1,
            Client(witness.address, key, "lb2") as lb2,
        ):
            granted = await lb1.ask(Op.ACQUIRE)
            assert (granted.result, granted.epoch, granted.ttl) == (Result.GRANTED, 1, TTL)

            refused = await lb2.ask(Op.ACQUIRE)
            assert (refused.result, refused.holder, refused.epoch) == (Result.REFUSED, "lb1", 1)
            assert 0 < refused.remaining <= TTL

            renewed = await lb1.ask(Op.RENEW, epoch=1)
            assert (renewed.result, renewed.epoch) == (Result.RENEWED, 1)
            assert (await lb2.ask(Op.RENEW, epoch=1)).result is Result.REFUSED

            assert (await lb1.ask(Op.RELEASE, epoch=1)).result is Result.RELEASED
            taken = await lb2.ask(Op.ACQUIRE)
            assert (taken.result, taken.epoch) == (Result.GRANTED, 2)
            fenced = await lb1.ask(Op.RENEW, epoch=1)
            assert (fenced.result, fenced.holder, fenced.epoch) == (Result.REFUSED, "lb2", 2)

            unknown = await lb1.ask(Op.ACQUIRE, lease="db")
            assert (unknown.result, unknown.error) == (Result.ERROR, "unknown lease db")
            return dict(lb1.backend.counters), dict(lb2.backend.counters)

    lb1_counters, lb2_counters = asyncio.run(scenario())
    assert lb1_counters["reply.granted"] == 1 and lb1_counters["reply.released"] == 1
    assert lb2_counters["reply.granted"] == 1 and lb2_counters["reply.refused"] >= 2
    assert not [k for k in lb1_counters | lb2_counters if k.startswith("drop.")]

    granted = witness.events("lease-granted")
    assert [(e["node"], e["epoch"]) for e in granted] == [("lb1", 1), ("lb2", 2)]
    assert witness.events("lease-released")[0]["node"] == "lb1"
    assert witness.wait_event("lease-refused")["holder"] == "lb1"
    assert witness.counters()["unknown-lease"] >= 1
    assert witness.stop() == 0
    assert json.loads(witness.state.read_text())["leases"]["web"] == {
        "epoch": 2,
        "holder": "lb2",
        "ttl": TTL,
    }


def test_restart_keeps_epochs_and_the_holder(
    witnesses: Callable[..., Witness], key_file: Path
) -> None:
    key = key_of(key_file)
    witness = witnesses()
    address = witness.address

    async def phase(steps: Callable[[Client, Client], Any]) -> None:
        async with Client(address, key, "lb1") as lb1, Client(address, key, "lb2") as lb2:
            await steps(lb1, lb2)

    async def before(lb1: Client, lb2: Client) -> None:
        assert (await lb1.ask(Op.ACQUIRE)).epoch == 1

    async def during_grace(lb1: Client, lb2: Client) -> None:
        # The restarted witness must not hand lb1's lease to lb2 early...
        refused = await lb2.ask(Op.ACQUIRE)
        assert (refused.result, refused.holder, refused.epoch) == (Result.REFUSED, "lb1", 1)
        # ... and lb1's renewals keep working.
        renewed = await lb1.ask(Op.RENEW, epoch=1)
        assert (renewed.result, renewed.epoch) == (Result.RENEWED, 1)
        assert (await lb1.ask(Op.RELEASE, epoch=1)).result is Result.RELEASED
        taken = await lb2.ask(Op.ACQUIRE)
        assert (taken.result, taken.epoch) == (Result.GRANTED, 2)

    async def after_second_restart(lb1: Client, lb2: Client) -> None:
        assert (await lb1.ask(Op.ACQUIRE)).holder == "lb2"
        assert (await lb2.ask(Op.RENEW, epoch=2)).result is Result.RENEWED
        assert (await lb2.ask(Op.RELEASE, epoch=2)).result is Result.RELEASED
        taken = await lb1.ask(Op.ACQUIRE)
        assert (taken.result, taken.epoch) == (Result.GRANTED, 3)

    asyncio.run(phase(before))
    for steps in (during_grace, after_second_restart):
        assert witness.stop() == 0
        witness = witnesses(port=address[1])
        restored = witness.wait_event("lease-restored")
        assert restored["grace"] == TTL
        asyncio.run(phase(steps))
    assert witness.stop(signal.SIGINT) == 0


def test_requests_that_queue_up_share_one_write_of_the_state(
    witnesses: Callable[..., Witness], key_file: Path
) -> None:
    """Group commit: requests that wait in the socket while the witness is busy (here: stopped)
    are answered as one batch, after one write of the state."""
    names = [f"vi{i}" for i in range(20)]
    witness = witnesses(leases=" ".join(names))
    key = key_of(key_file)
    before = witness.counters()
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.settimeout(WAIT)
    sock.bind(("127.0.0.1", 0))
    ts = time.time_ns()
    witness.proc.send_signal(signal.SIGSTOP)
    try:
        for i, name in enumerate(names):
            request = Request(Op.ACQUIRE, name, i, TTL)
            sock.sendto(encode_request(key, request, "lb1", ts + i), witness.address)
    finally:
        witness.proc.send_signal(signal.SIGCONT)
    replies = [decode_reply(key, sock.recvfrom(2048)[0]).reply for _ in names]
    assert {(r.lease, r.result, r.epoch) for r in replies} == {
        (name, Result.GRANTED, 1) for name in names
    }
    after = witness.counters()
    assert after["batches"] - before.get("batches", 0) == 1
    assert after["state-writes"] - before["state-writes"] == 1
    sock.close()
    assert witness.stop() == 0
    leases = json.loads(witness.state.read_text())["leases"]
    assert {leases[name]["holder"] for name in names} == {"lb1"}


# ---- bad input ------------------------------------------------------------------------------


def test_bad_datagrams_are_dropped_and_counted_and_the_witness_keeps_serving(
    witnesses: Callable[..., Witness], key_file: Path
) -> None:
    witness = witnesses()
    key = key_of(key_file)
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.settimeout(WAIT)
    sock.bind(("127.0.0.1", 0))

    def exchange(req_id: int, ts: int) -> tuple[bytes, Reply]:
        data = encode_request(key, Request(Op.ACQUIRE, "web", req_id, 5.0), "lb1", ts)
        sock.sendto(data, witness.address)
        answer, _ = sock.recvfrom(2048)
        return data, decode_reply(key, answer).reply

    ts = time.time_ns()
    captured, reply = exchange(1, ts)
    assert reply.result is Result.GRANTED

    impostor = encode_request(
        b"not the key, but long enough", Request(Op.ACQUIRE, "web", 2), "lb2", ts
    )
    bad = {
        "bad-mac": impostor,
        "replay": captured,
        "truncated": captured[:30],
        "oversized": captured + b"\0" * 1024,
        "bad-magic": b"\x00" * 64,
        "stale": encode_request(key, Request(Op.ACQUIRE, "web", 3), "lb2", ts - 3600 * 10**9),
    }
    for data in bad.values():
        sock.sendto(data, witness.address)
    # Loopback keeps order: had the witness answered any of those, that answer would come first.
    _, reply = exchange(4, ts + 1)
    assert (reply.req_id, reply.result) == (4, Result.GRANTED)

    counters = witness.counters()
    assert {k: counters.get(f"drop.{k}") for k in bad} == dict.fromkeys(bad, 1)
    dropped = {e["reason"] for e in witness.events("datagram-dropped")}
    assert dropped == set(bad)

    # A flood of garbage changes nothing either. It goes in bursts, each followed by a request,
    # so the socket buffer never overflows and every datagram is accounted for.
    bursts, burst = 100, 20
    for n in range(bursts):
        for i in range(burst):
            sock.sendto(os.urandom((n * burst + i) % 1500), witness.address)
        _, reply = exchange(10 + n, ts + 2 + n)
        assert (reply.req_id, reply.result) == (10 + n, Result.GRANTED)
    counters = witness.counters()
    drops = sum(v for k, v in counters.items() if k.startswith("drop."))
    assert drops == len(bad) + bursts * burst
    assert counters["rx"] == drops + counters["tx"] == drops + 2 + bursts
    sock.close()
    assert witness.stop() == 0


# ---- start-up errors ------------------------------------------------------------------------


def run_witness(*args: str) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "vipd", "witness", "--listen", "127.0.0.1:0", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=WAIT)


@pytest.mark.parametrize(("content", "problem"), [(b"", "is empty"), (b"tiny\n", "4 bytes")])
def test_bad_key_file_is_a_clear_error(tmp_path: Path, content: bytes, problem: str) -> None:
    key = tmp_path / "witness.key"
    key.write_bytes(content)
    done = run_witness(
        "--state", str(tmp_path / "s.json"), "--key-file", str(key), "--lease", "web"
    )
    assert done.returncode != 0
    assert str(key) in done.stderr and problem in done.stderr


def test_missing_key_file_is_a_clear_error(tmp_path: Path) -> None:
    key = tmp_path / "missing.key"
    done = run_witness(
        "--state", str(tmp_path / "s.json"), "--key-file", str(key), "--lease", "web"
    )
    assert done.returncode != 0
    assert str(key) in done.stderr and "cannot read" in done.stderr


def test_corrupt_state_file_refuses_to_start(tmp_path: Path, key_file: Path) -> None:
    state = tmp_path / "state.json"
    state.write_text('{"version": 1, "leases": {"web": {"epoch": 7, "holder": "lb1"')
    done = run_witness("--state", str(state), "--key-file", str(key_file), "--lease", "web")
    assert done.returncode != 0
    assert str(state) in done.stderr and "not valid JSON" in done.stderr
    assert state.read_text().endswith('"lb1"')  # left alone, epochs not reset


def test_second_witness_on_the_same_state_refuses_to_start(
    witnesses: Callable[..., Witness], key_file: Path
) -> None:
    witness = witnesses()
    done = run_witness("--state", str(witness.state), "--key-file", str(key_file), "--lease", "web")
    assert done.returncode != 0
    assert "in use by another vipd witness" in done.stderr
    assert witness.stop() == 0
