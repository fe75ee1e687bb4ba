"""The development node: scheduler and kubelet for one Node, running pods as local processes.

The test suite's and `pynchy dev`'s control plane has no scheduler and no kubelet. A
:class:`DevNode` registers a Node, keeps it Ready (Lease + Ready heartbeat), binds the
pending pods of the namespaces it watches to that Node, and runs each bound pod's single
container (after its init containers) as a process group on this host, writing the pod's
status as a kubelet does. Images are ignored: ``command`` + ``args`` run from the dev
node's PATH. Volumes are directories under ``data_dir``. With a :class:`Sandbox` each
container runs in a bubblewrap sandbox (its own user, mount, PID, IPC, UTS and network
namespaces; the volumes mounted at their paths; loopback and relays to the gateway only);
without, as a plain process whose paths are rewritten to a per-pod root directory (see
:mod:`pynchy.devnode.pathmap`).
docs/devnode.md describes the behaviour and how it differs from a real kubelet.
"""

from pynchy.devnode.relay import Address
from pynchy.devnode.runner import DevNode, DevNodeError
from pynchy.devnode.sandbox import Sandbox

__all__ = ["Address", "DevNode", "DevNodeError", "Sandbox"]
