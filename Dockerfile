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

# --copies gives the venv its own interpreter binaries, so the file capabilities set below are
# on vipd's interpreter only, not on the image's python3.
#
# File capabilities: the daemon runs as the unprivileged user vipd, and needs CAP_NET_RAW (raw
# VRRP and AF_PACKET sockets) and CAP_NET_ADMIN (adding VIPs by netlink). Setting
# "security.capability" is what `setcap cap_net_admin,cap_net_raw=ep` does, without
# installing libcap2-bin: VFS_CAP_REVISION_2 with the effective flag, permitted =
# CAP_NET_ADMIN (12) | CAP_NET_RAW (13). The container must still be given both capabilities
# (--cap-add NET_ADMIN --cap-add NET_RAW): without them in the bounding set the kernel refuses
# to execute the interpreter at all ("operation not permitted"), which fails loudly at start.
RUN python3 -m venv --copies /opt/vipd/venv \
 && /opt/vipd/venv/bin/pip install /usr/src/vipd \
 && rm -rf /usr/src/vipd \
 && python3 -c 'import os, pathlib, struct; \
caps = struct.pack("<5I", 0x02000001, 1 << 12 | 1 << 13, 0, 0, 0); \
bins = [p for p in pathlib.Path("/opt/vipd/venv/bin").glob("python*") if not p.is_symlink()]; \
[os.setxattr(p, "security.capability", caps) for p in bins]; \
print("file capabilities set on", *sorted(map(str, bins)))' \
 && groupadd --system --gid 10001 vipd \
 && useradd --system --uid 10001 --gid vipd --no-create-home --home-dir /nonexistent \
        --shell /usr/sbin/nologin vipd \
 && install -d -o vipd -g vipd -m 0750 /run/vipd \
 && install -d -m 0755 /etc/vipd

USER vipd
# vipctl exits 0 when every instance is MASTER or BACKUP, 1 when one is not, 2 when the daemon
# does not answer. (Podman keeps HEALTHCHECK only with `podman build --format docker`.)
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 CMD ["vipctl", "status"]
# SIGTERM (docker stop) makes vipd send priority-0 adverts and remove its VIPs before exiting.
STOPSIGNAL SIGTERM
ENTRYPOINT ["vipd"]
CMD ["run", "-c", "/etc/vipd/vipd.toml"]
