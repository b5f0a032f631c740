"""Networking: IPAM, the bridge driver, veth and netns plumbing, port publishing
through nftables, and the embedded DNS of user networks. It knows nothing of images."""
