"""mu's ``libmu.socket_nb``: ``SocketNB``, here the in-memory queues a state is built on.

The coordinator's asyncio server owns the real sockets, so this SocketNB has mu's queue API
(``enqueue``, ``dequeue``, ``recv_queue``, ``send_queue``, ``want_handle``, ``update_flags``,
``format_message``) and no ``do_read``/``do_write``.
"""

from coordinator.core.machine import SocketNB

__all__ = ["SocketNB"]
