"""What ``dockyard-runtime features`` reports: the parts of the spec implemented here."""

from __future__ import annotations

from dockyard.oci import runtime as oci
from dockyard.runtime.container import NAMESPACES, OCI_VERSION
from dockyard.runtime.rootfs import PROPAGATION, mount_option_names


def features() -> oci.Features:
    """The OCI features document of this runtime on this host."""
    return oci.Features(
        oci_version_min="1.0.0",
        oci_version_max=OCI_VERSION,
        hooks=["prestart", "createRuntime", "createContainer", "startContainer", "poststart",
               "poststop"],
        mount_options=sorted(mount_option_names() | set(PROPAGATION)),
        linux=oci.LinuxFeatures(
            namespaces=sorted(NAMESPACES),
            capabilities=list(oci.CAPABILITIES),
            cgroup=oci.CgroupFeatures(v1=True, v2=True, systemd=False, systemd_user=False,
                                      rdma=False),
            seccomp=oci.SeccompFeatures(
                enabled=True,
                actions=sorted(a for a in oci.SECCOMP_ACTIONS if a != "SCMP_ACT_NOTIFY"),
                operators=sorted(oci.SECCOMP_OPERATORS),
                archs=sorted(oci.SECCOMP_ARCHES),
                known_flags=sorted(oci.SECCOMP_FLAGS),
                supported_flags=sorted(oci.SECCOMP_FLAGS),
            ),
            apparmor=oci.EnabledFeature(enabled=False),
            selinux=oci.EnabledFeature(enabled=False),
            intel_rdt=oci.EnabledFeature(enabled=False),
            mount_extensions=oci.MountExtensionsFeatures(idmap=oci.EnabledFeature(enabled=False)),
        ),
    )
