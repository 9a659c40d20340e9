"""Command-line entry points: ``vipd`` (run, check, demo) and ``vipctl`` (talks to a running
daemon over its control socket). Each ``main`` takes ``argv`` and returns the exit code, so
tests call them directly."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from typing import Any

DEFAULT_CONFIG = "/etc/vipd/vipd.toml"
DEFAULT_SOCKET = "/run/vipd/vipd.sock"


def vipd_main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="vipd", description="VRRPv3 virtual-IP daemon")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run the daemon")
    run.add_argument("-c", "--config", default=DEFAULT_CONFIG)
    check = sub.add_parser("check", help="validate a config file and exit (like keepalived -t)")
    check.add_argument("-c", "--config", default=DEFAULT_CONFIG)
    demo = sub.add_parser("demo", help="a live two-node pair in network namespaces (root)")
    demo.add_argument("--advert-interval", type=float, default=1.0)
    demo.add_argument(
        "--no-witness", action="store_true", help="plain VRRP, without the embedded witness"
    )
    imp = sub.add_parser(
        "import-keepalived",
        help="convert a keepalived.conf's VRRP part to vipd TOML (stdout or -o); lines not "
        "converted go to stderr; exit 0 all converted, 1 some not, 2 parse error",
    )
    imp.add_argument("file", help="keepalived configuration (includes are followed)")
    imp.add_argument("-o", "--output", help="write the TOML here instead of stdout")
    from vipd.witness.server import add_witness_arguments, run_witness

    add_witness_arguments(sub.add_parser("witness", help="run the embedded witness (UDP)"))
    args = parser.parse_args(argv)

    if args.command == "check":
        return _check(args.config)
    if args.command == "run":
        return _run(args.config)
    if args.command == "witness":
        return run_witness(args)
    if args.command == "import-keepalived":
        from vipd.importer import cli_import

        return cli_import(args.file, args.output)
    from vipd.demo import run_demo

    return run_demo(advert_interval=args.advert_interval, witness=not args.no_witness)


def _check(path: str) -> int:
    from vipd.config import ConfigError, load_config

    try:
        config = load_config(path)
    except ConfigError as exc:
        print(str(exc), file=sys.stderr)
        print(f"{path}: {len(exc.issues)} error(s)", file=sys.stderr)
        return 1
    print(f"{path}: OK, {len(config.instances)} instance(s)")
    return 0


def _run(path: str) -> int:
    from vipd.config import ConfigError, load_config
    from vipd.daemon import Daemon, StartupError
    from vipd.log import setup_logging
    from vipd.net.addrs import NetlinkError

    try:
        config = load_config(path)
    except ConfigError as exc:
        print(str(exc), file=sys.stderr)
        return 1
    setup_logging(config.log_format, config.log_level)
    try:
        asyncio.run(Daemon(config).run())
    except (StartupError, NetlinkError, PermissionError) as exc:
        print(f"vipd: cannot start: {exc}", file=sys.stderr)
        return 1
    return 0


# ---- vipctl ---------------------------------------------------------------------------------


def vipctl_main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="vipctl", description="control a running vipd")
    parser.add_argument("-s", "--socket", default=DEFAULT_SOCKET, help="control socket path")
    sub = parser.add_subparsers(dest="command", required=True)
    status = sub.add_parser(
        "status", help="per-instance state; exit 0 healthy, 1 degraded, 2 unreachable"
    )
    status.add_argument("--json", action="store_true", help="machine-readable output")
    failover = sub.add_parser(
        "failover", help="hand mastership over to the peer and wait until it holds the VIP"
    )
    failover.add_argument("instance", nargs="?", help="only this instance (default: all)")
    failover.add_argument(
        "--force", action="store_true", help="even if no peer confirmed it is ready"
    )
    failover.add_argument("--timeout", type=float, default=30.0, help="seconds to wait")
    maintenance = sub.add_parser(
        "maintenance", help="drain this node (give up and refuse mastership) or undrain it"
    )
    maintenance.add_argument("mode", choices=("on", "off"))
    maintenance.add_argument("instance", nargs="?", help="only this instance (default: all)")
    sub.add_parser("reload", help="re-read the config; a bad one is refused and changes nothing")
    sub.add_parser("events", help="stream transitions and other events as JSON lines")
    args = parser.parse_args(argv)

    from vipd.control import request, stream

    if args.command == "events":
        try:
            for event in stream(args.socket):
                print(json.dumps(event), flush=True)
        except KeyboardInterrupt:
            return 0
        except (OSError, ValueError) as exc:
            print(f"vipctl: cannot stream events from {args.socket}: {exc}", file=sys.stderr)
            return 2
        return 0
    params: dict[str, Any] = {}
    timeout = 5.0
    if args.command == "failover":
        params = {"instance": args.instance, "force": args.force, "timeout": args.timeout}
        timeout = args.timeout + 5.0
    elif args.command == "maintenance":
        params = {"on": args.mode == "on", "instance": args.instance}
    try:
        answer = request(args.socket, args.command, timeout=timeout, params=params)
    except (OSError, ValueError) as exc:
        print(f"vipctl: cannot reach vipd at {args.socket}: {exc}", file=sys.stderr)
        return 2
    if not answer.get("ok"):
        print(f"vipctl: {answer.get('error')}", file=sys.stderr)
        return 1
    result: Any = answer["result"]
    if args.command == "status":
        print(json.dumps(result, indent=2) if args.json else _status_table(result))
        healthy = all(i["state"] in ("master", "backup") for i in result["instances"])
        return 0 if healthy else 1
    if args.command == "failover":
        failed = False
        for name, r in result.items():
            if r["new_master"] is None:
                failed = True
                print(f"{name}: no peer took over within {args.timeout:g} s")
            else:
                print(
                    f"{name}: {r['new_master']} took over; {r['gap_ms']:.0f} ms from this "
                    "node dropping the VIP to the new master's first advert"
                )
        return 1 if failed else 0
    if args.command == "maintenance":
        for name, state in result.items():
            print(f"{name}: {state}")
        return 0
    for key in ("added", "removed", "changed", "replaced", "unchanged"):
        if result.get(key):
            print(f"{key}: {', '.join(result[key])}")
    return 0


def _lease_cell(witness: dict[str, Any] | None) -> str:
    if witness is None:
        return "-"
    if witness["state"] != "held":
        return str(witness["state"])
    return f"epoch {witness['epoch']}, {float(witness['remaining']):.1f}s"


def _status_table(status: dict[str, Any]) -> str:
    header = (
        "INSTANCE",
        "STATE",
        "PRIO",
        "VRID",
        "INTERFACE",
        "VIPS",
        "MASTER",
        "LEASE",
        "LAST CHANGE",
    )
    rows: list[tuple[str, ...]] = [header]
    for i in status["instances"]:
        last = i["last_transition"]
        prio = str(i["effective_priority"])
        if i["effective_priority"] != i["priority"]:
            prio += f"/{i['priority']}"
        master = "-" if not i["master"] else f"{i['master']} ({i['master_priority']})"
        rows.append(
            (
                i["name"],
                i["state"].upper(),
                prio,
                str(i["vrid"]),
                i["interface"],
                ",".join(i["vips"]),
                master,
                _lease_cell(i.get("witness")),
                "-" if last is None else f"{last['from']}->{last['to']} ({last['reason']})",
            )
        )
    widths = [max(len(r[c]) for r in rows) for c in range(len(header))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)) for r in rows]
    for i in status["instances"]:
        if i.get("fault"):
            lines.append(f"{i['name']}: in FAULT because of {i['fault']}")
        for t in i.get("trackers") or []:
            judged = {True: "ok", False: "FAILED", None: "pending"}[t["ok"]]
            line = f"{i['name']}: tracker {t['name']} ({t['kind']}, weight {t['weight']}): {judged}"
            if t["ok"] is False and t.get("last_error"):
                line += f": {t['last_error']}"
            lines.append(line)
    for g in status.get("groups") or []:
        lines.append(f"group {g['name']} ({', '.join(g['instances'])}): {g['state'] or '-'}")
    node = f"node {status['node']}, up {status['uptime']:.0f} s"
    sched = status.get("scheduler") or {}
    if sched.get("priority"):
        node += f", SCHED_RR {sched['priority']}" if sched["realtime"] else ", NOT realtime"
        if sched["realtime_drops"]:
            node += f" (dropped {sched['realtime_drops']} times)"
    lines.append(node)
    return "\n".join(line.rstrip() for line in lines)
