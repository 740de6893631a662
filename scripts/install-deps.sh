#!/usr/bin/env bash
# install-deps.sh: installs the system packages TruckeeFS's build and tests need (Debian/Ubuntu).
#
#   fuse3        fusermount3, to mount and unmount the filesystem (fuser is built without libfuse)
#   libacl1-dev  libacl.so, which the pjdfstest conformance suite links against
#   redis-server the aysfs tests start private Redis servers (local cache, debug store, backend)
#   mariadb-server  the MySQL/MariaDB metadata store's tests start a private server
#
# Fast when everything is present: apt is touched only if something is missing. Installing needs
# root; as another user it fails with the list of what to install.
#
# Run:  ./scripts/install-deps.sh        (called by scripts/test.sh and scripts/pjdfstest.sh)
set -euo pipefail

PACKAGES=(fuse3 libacl1-dev redis-server mariadb-server)

missing=()
for pkg in "${PACKAGES[@]}"; do
    if ! dpkg-query -W -f='${Status}\n' "$pkg" 2>/dev/null | grep -q '^install ok installed$'; then
        missing+=("$pkg")
    fi
done
if ! command -v fusermount3 >/dev/null 2>&1 && [[ ! " ${missing[*]-} " == *" fuse3 "* ]]; then
    missing+=(fuse3)
fi

if [[ ${#missing[@]} -eq 0 ]]; then
    echo "install-deps: all present (${PACKAGES[*]})"
else
    if [[ $(id -u) -ne 0 ]]; then
        echo "install-deps: ERROR: missing system packages: ${missing[*]}" >&2
        echo "install-deps: run as root, or: sudo apt-get install -y ${missing[*]}" >&2
        exit 1
    fi
    echo "install-deps: installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q
    apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

if [[ ! -e /dev/fuse ]]; then
    echo "install-deps: ERROR: /dev/fuse does not exist; FUSE mounts (integration tests, pjdfstest, bench) cannot work here" >&2
    exit 1
fi
