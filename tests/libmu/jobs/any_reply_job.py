#!/usr/bin/env python3
"""Runs a benchmark program twice on every worker and takes whatever comes back: a job file in
the shape of mu's linpack_server.py, whose states accept any reply starting with OK, so a
program the worker lacks (exit status 127) does not fail the job; the end-of-run summary must
say so instead."""

import os

from coordinator.libmu import CommandListState, TerminalState, server


class ServerInfo(object):
    states = []
    host_addr = None
    port_number = 13579
    regions = ["us-east-1"]
    num_parts = 1
    overprovision = 0
    lambda_function = "bench"
    cacert = None
    srvcrt = None
    srvkey = None
    profiling = None
    out_file = None
    kill_time = None
    kill_state = None
    program = "./no_such_benchmark"  # not a mu setting: the tests' choice of program


class FinalState(TerminalState):
    extra = "(finished)"


class BenchState(CommandListState):
    extra = "(running the benchmark twice)"
    nextState = FinalState
    commandlist = [
        ("OK:HELLO", "run:time {0}"),
        (None, "run:time {0}"),
        ("OK", None),
        ("OK", None),
        ("OK", None),
        ("OK", None),
    ]

    def __init__(self, prevState, aNum=0):
        super(BenchState, self).__init__(prevState, aNum)
        self.commands = [c.format(ServerInfo.program) if c is not None else None for c in self.commands]


def main():
    server.options(ServerInfo)
    event = {"mode": 1, "port": ServerInfo.port_number, "addr": ServerInfo.host_addr, "nonblock": 1}
    server.server_launch(ServerInfo, event, os.environ["AWS_ACCESS_KEY_ID"], os.environ["AWS_SECRET_ACCESS_KEY"])
    server.server_main_loop(ServerInfo.states, BenchState, ServerInfo)


if __name__ == "__main__":
    main()
