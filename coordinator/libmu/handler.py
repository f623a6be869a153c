"""mu's ``libmu.handler`` as job files use it: which reply acknowledges a command.

The worker half of mu's handler (``do_set``, ``do_run`` ...) is ``lambda_worker``.
"""

from coordinator.core.machine import REPLY_PREFIX, expected_response

message_responses = REPLY_PREFIX

__all__ = ["expected_response", "message_responses"]
