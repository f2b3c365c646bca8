"""A lab of real machines on one box: network namespaces on a private bridge.

Each lab machine is a network namespace with its own address, PID namespace and mount
namespace, running an SSH server (and, unless the cluster launcher starts it, a Ray node).
`plan`, `commands` and `launcher_config` are pure (names, addresses, argv, config text);
`shell`, `network`, `machine`, `lab`, `status`, `faults` and `launcher` execute them.
Nothing here routes out of the lab: no default route, no NAT, no forwarding.
"""
