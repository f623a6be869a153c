#!/usr/bin/env python3
"""Every worker joins mu's state server (here the relay) and echoes its actor and group numbers:
a job file in mu's style for the tests of actor order, group numbers and ``-T``/``-R`` relays.

With ``-K kfDist`` actors are numbered in mu's rotating-goose order, and because the settings
have ``state_srv_threads``, the first state gets its group number and dials relay port
``-T + group % -R``, as xcenc does.
"""

import os

from coordinator.libmu import CommandListState, TerminalState, server, util


class ServerInfo(object):
    port_number = 13579
    num_parts = 1
    keyframe_distance = None
    state_srv_addr = "127.0.0.1"
    state_srv_port = 13337
    state_srv_threads = 1
    lambda_function = "greet"
    regions = ["us-east-1"]
    out_file = None
    profiling = None
    kill_time = None
    cacert = None
    srvcrt = None
    srvkey = None
    client_uniq = None
    fail_actor = None  # not a mu setting: the tests set it to make one actor's command fail


states = []


class FinalState(TerminalState):
    extra = "(done)"


class GreetState(CommandListState):
    extra = "(greeting)"
    nextState = FinalState
    commandlist = [
        ("OK:HELLO", "connect:{0}:HELLO_STATE:{1}:{2}:{3}"),
        ("OK:CONNECT", "run:{4}"),
        ("OK:RETVAL(0)", "quit:"),
    ]

    def __init__(self, prevState, aNum=0, gNum=0):
        super(GreetState, self).__init__(prevState, aNum)
        self.group = gNum
        if ServerInfo.client_uniq is None:
            ServerInfo.client_uniq = util.rand_str(16)
        port = ServerInfo.state_srv_port + gNum % ServerInfo.state_srv_threads
        relay = "%s:%d" % (ServerInfo.state_srv_addr, port)
        command = "echo actor %d group %d port %d" % (self.actorNum, gNum, port)
        if self.actorNum == ServerInfo.fail_actor:
            command = "exit 3"
        self.commands = [
            s.format(relay, ServerInfo.client_uniq, self.actorNum, self.actorNum + 1, command) if s else s
            for s in self.commands
        ]


def main():
    server.options(ServerInfo)
    event = {"mode": 1, "port": ServerInfo.port_number, "addr": None, "nonblock": 0}
    server.server_launch(
        ServerInfo, event, os.environ["AWS_ACCESS_KEY_ID"], os.environ["AWS_SECRET_ACCESS_KEY"]
    )
    server.server_main_loop(states, GreetState, ServerInfo)


if __name__ == "__main__":
    main()
