#!/usr/bin/env bash
# Install dockyard and its peers on Debian 12, then run a first container.
#
#   sudo ./install.sh            install everything, build the busybox image, run a container
#   sudo ./install.sh --no-run   install only (what ./run-tests.sh uses on a fresh clone)
#
# Idempotent: run it again at any time. DOCKYARD_RUNTIME=/usr/sbin/runc runs the demo
# with another runc-compatible runtime.
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
    nftables iptables iproute2 hyperfine
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

# A busybox bundle made with shell tools only, so the quick start does not depend on
# the test helpers (tests/bundles.py builds its own).
echo "==> busybox bundle"
runtime=${DOCKYARD_RUNTIME:-$venv/bin/dockyard-runtime}
bundle=/var/lib/dockyard/bundles/busybox
rootfs=$bundle/rootfs
rm -rf "$bundle"
mkdir -p "$rootfs"/{bin,sbin,usr/bin,usr/sbin,etc,root,proc,sys,dev,tmp}
chmod 1777 "$rootfs/tmp"
cp /usr/bin/busybox "$rootfs/bin/busybox"
# Inside the rootfs, busybox puts each applet's symlink where it belongs (bin/sh,
# usr/bin/env...), all pointing at /bin/busybox.
chroot "$rootfs" /bin/busybox --install -s
printf '%s\n' 'root:x:0:0:root:/root:/bin/sh' \
    'nobody:x:65534:65534:nobody:/nonexistent:/bin/false' >"$rootfs/etc/passwd"
printf '%s\n' 'root:x:0:' 'nogroup:x:65534:' >"$rootfs/etc/group"
"$runtime" spec --bundle "$bundle"
# No terminal: the demo's output goes straight to this script's stdout.
"$venv/bin/python" - "$bundle/config.json" <<'EOF'
import json, sys
path = sys.argv[1]
with open(path) as f:
    spec = json.load(f)
spec["process"]["terminal"] = False
spec["process"]["args"] = ["echo", "hello from dockyard"]
with open(path, "w") as f:
    json.dump(spec, f, indent=2)
EOF

echo "==> $(basename "$runtime") run --bundle $bundle quickstart-$$"
"$runtime" run --bundle "$bundle" "quickstart-$$"
