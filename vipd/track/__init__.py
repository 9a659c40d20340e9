"""Health tracking, sync groups and notify hooks (docs/tracking.md).

- :mod:`vipd.track.core`: pure: rise/fall counting, combining tracker results into an
  instance's effective priority or fault, the sync-group rules, the hooks' arguments.
- :mod:`vipd.track.checks`: the asyncio checks (scripts, HTTP, TCP, files, netlink links).
- :mod:`vipd.track.runner`: owns the check tasks and reports changes to the daemon.
- :mod:`vipd.track.hooks`: runs notify commands in order, per instance or group.
"""
