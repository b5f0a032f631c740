#!/usr/bin/env bash
# Install dockyard and its peers on Debian 12, then run a first container.
#
#   sudo ./install.sh            install everything, build the busybox image, run a container
#   sudo ./install.sh --no-run   install only (what ./run-tests.sh uses on a fresh clone)
#
# Idempotent: run it again at any time.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
run_demo=1
for arg in "$@"; do
    case $arg in
        --no-run) run_demo=0 ;;
        -h|--help) sed -n '2,8s/^# \{0,1\}//p' "$0"; exit 0 ;;
        *) echo "install.sh: unknown option $arg (try --help)" >&2; exit 2 ;;
    esac
done
if [[ $(id -u) != 0 ]]; then
    echo "install.sh: needs root for apt-get and to run a container: sudo $0 $*" >&2
    exit 1
fi

# The peers the tests and benchmarks run against (ARCHITECTURE.md, "The peers"), and
# what the runtime needs from the system: libseccomp for pyseccomp, python3-venv for
# the virtualenv, util-linux for unshare(1) and script(1).
packages=(
    runc crun containerd busybox-static skopeo umoci docker-registry debootstrap
    nftables iptables iproute2 hyperfine tini
    python3 python3-venv libseccomp2 util-linux ca-certificates debian-archive-keyring
)
echo "==> apt packages"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${packages[@]}" >/dev/null

# Debian's interpreter, never a pyenv shim on PATH: it starts in ~10 ms instead of ~80,
# which every dockyard-runtime call pays. A venv made from anything else is replaced.
echo "==> virtualenv .venv"
venv=$repo/.venv
if [[ ! -x $venv/bin/python ]] || ! grep -qx 'home = /usr/bin' "$venv/pyvenv.cfg"; then
    rm -rf "$venv"
    /usr/bin/python3 -m venv "$venv"
fi
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check -e "$repo[test]"
# Byte-compile the package even where PYTHONDONTWRITEBYTECODE is set: every
# dockyard-runtime start would otherwise compile its modules again (~30 ms).
PYTHONDONTWRITEBYTECODE= "$venv/bin/python" -m compileall -q "$repo/src" >/dev/null
# What run-tests.sh compares to know whether the dependencies changed since.
sha256sum "$repo/pyproject.toml" "$repo/install.sh" >"$venv/.dockyard-installed"

[[ $run_demo == 1 ]] || exit 0

# The default image, built from the busybox-static package (no registry needed).
echo "==> dockyard image bootstrap busybox"
"$venv/bin/dockyard" image bootstrap busybox

echo "==> dockyard run --rm busybox echo hello from dockyard"
"$venv/bin/dockyard" run --rm busybox echo hello from dockyard
