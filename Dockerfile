# vipd in a container. See docs/containers.md for building and running it.
#
# The base is a build argument: users get the slim Python image; machines without a registry
# build on a locally imported Debian base (python3, python3-venv) instead, as the container
# test does.
ARG BASE=python:3.12-slim
FROM ${BASE}

ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PATH=/opt/vipd/venv/bin:$PATH

COPY pyproject.toml README.md /usr/src/vipd/
COPY vipd /usr/src/vipd/vipd

# File capabilities: the daemon runs as the unprivileged user vipd and needs CAP_NET_RAW (raw
# VRRP and AF_PACKET sockets) and CAP_NET_ADMIN (VIPs and vmac links by netlink). They go on
# one copy of the venv's interpreter, python-netcaps, which only the entrypoint (`vipd run`)
# uses; vipctl, `vipd check` and `vipd witness` run the plain interpreter with no capability.
# Setting "security.capability" is what `setcap cap_net_admin,cap_net_raw=ep` does, without
# installing libcap2-bin: VFS_CAP_REVISION_2 with the effective flag, permitted =
# CAP_NET_ADMIN (12) | CAP_NET_RAW (13). The container must be given both (--cap-add NET_ADMIN
# --cap-add NET_RAW): without them in its bounding set the kernel refuses to execute
# python-netcaps at all ("operation not permitted"), so a missing capability fails at start.
RUN python3 -m venv /opt/vipd/venv \
 && /opt/vipd/venv/bin/pip install /usr/src/vipd \
 && rm -rf /usr/src/vipd \
 && cp -L /opt/vipd/venv/bin/python3 /opt/vipd/venv/bin/python-netcaps \
 && python3 -c 'import os, struct; os.setxattr("/opt/vipd/venv/bin/python-netcaps", \
"security.capability", struct.pack("<5I", 0x02000001, 1 << 12 | 1 << 13, 0, 0, 0))' \
 && groupadd --gid 10001 vipd \
 && useradd --uid 10001 --gid vipd --no-create-home --no-log-init --home-dir /nonexistent \
        --shell /usr/sbin/nologin vipd \
 && install -d -o vipd -g vipd -m 0750 /run/vipd \
 && install -d -o vipd -g vipd -m 0700 /var/lib/vipd-witness \
 && install -d -m 0755 /etc/vipd

USER vipd
# vipctl exits 0 when every instance is MASTER or BACKUP, 1 when one is not, 2 when the daemon
# does not answer. (Podman keeps HEALTHCHECK only with `podman build --format docker`.)
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 CMD ["vipctl", "status"]
# SIGTERM (docker stop) makes vipd send priority-0 adverts and remove its VIPs before exiting.
STOPSIGNAL SIGTERM
# Other subcommands without capabilities: --entrypoint vipd (e.g. `vipd check -c FILE`,
# `vipd witness ...`).
ENTRYPOINT ["/opt/vipd/venv/bin/python-netcaps", "-m", "vipd"]
CMD ["run", "-c", "/etc/vipd/vipd.toml"]
