#!/usr/bin/env python3
"""A job file shaped like ExCamera's xcenc_server.py, for the replay test (not an encoder).

Each worker joins the relay as its chunk's number and sends its state to the next one, fetches
its chunk, then runs passes: pass 0 encodes alone and dumps its state; each later pass waits for
the previous worker's state and re-encodes from it. The last worker checks that its result
converged; a worker that did not ends in ErrorState. Commands run in the background (nonblock)
and report only when done (bg_silent), so several states pipeline their commands.
"""

import os

from coordinator.libmu import (
    CommandListState,
    ErrorState,
    ForLoopState,
    OnePassState,
    TerminalState,
    server,
    util,
)


class ServerInfo(object):
    port_number = 13579
    host_addr = None
    state_srv_addr = "127.0.0.1"
    state_srv_port = 13337
    state_srv_threads = 1

    video_name = "clip-y4m_06"
    num_offset = 0
    num_parts = 1
    passes = 3
    quality_y = 30

    lambda_function = "encode"
    regions = ["us-east-1"]
    bucket = "frames"
    out_file = None
    profiling = None

    cacert = None
    srvcrt = None
    srvkey = None

    client_uniq = None


class FinalState(TerminalState):
    extra = "(done)"

    def __init__(self, prevState, aNum=0):
        super(FinalState, self).__init__(prevState, aNum)
        if not self.info.get("converged", False):
            self.__class__ = ErrorState
            self.err = "worker %d did not converge" % self.actorNum


class QuitState(OnePassState):
    extra = "(quit)"
    command = "quit:"
    nextState = FinalState


class FinishState(CommandListState):
    extra = "(uploading)"
    pipelined = True
    nextState = QuitState
    commandlist = [
        (None, "upload:{0}/out/{1}.ivf\0##TMPDIR##/output.ivf"),
        ("OK:UPLOAD(", "upload:{0}/state/{1}.state\0##TMPDIR##/final.state"),
        ("OK:UPLOAD(", None),
    ]

    def __init__(self, prevState, aNum=0):
        super(FinishState, self).__init__(prevState, aNum)
        chunk = "%08d" % (self.actorNum + ServerInfo.num_offset)
        self.commands = [
            s.format(ServerInfo.video_name, chunk) if s is not None else None for s in self.commands
        ]


class CheckState(OnePassState):
    extra = "(converged?)"
    expect = "OK:RETVAL("
    nextState = FinishState

    def post_transition(self):
        last = self.messages[-1]
        self.info["converged"] = self.actorNum < ServerInfo.passes - 1 or last[:12] == "OK:RETVAL(0)"
        return self.nextState(self)


class CompareState(OnePassState):
    extra = "(compare)"
    command = (
        'run:test ! -f "##TMPDIR##/prev.state" || ./compare "##TMPDIR##/prev.state" "##TMPDIR##/final.state"'
    )
    nextState = CheckState


class DumpState(CommandListState):
    extra = "(dump)"
    pipelined = True
    commandlist = [
        (None, 'run:./dump "##TMPDIR##/output.ivf" "##TMPDIR##/final.state"'),
        ("OK:RETVAL(0)", 'run:cp "##TMPDIR##/output.ivf" "##TMPDIR##/first.ivf"'),
        ("OK:RETVAL(0)", None),
    ]


class RunState(CommandListState):
    extra = "(encode)"
    commandlist = [("OK:RETVAL(0)", "run:{0}"), ("OK:RETVAL(0)", None)]

    def __init__(self, prevState, aNum=0):
        super(RunState, self).__init__(prevState, aNum)
        if self.info["pass"] == 0:
            self.nextState = DumpState
            cmd = './encode ##QUALITY## -o "##TMPDIR##/output.ivf" "##TMPDIR##/input.y4m"'
        else:
            cmd = '##INSTATEWAIT## ./reencode ##QUALITY## ##INSTATESWITCH## -o "##TMPDIR##/output.ivf"'
        self.commands = [s.format(cmd) if s is not None else None for s in self.commands]

    def str_extra(self):
        return "%s/%d" % (super(RunState, self).str_extra(), self.info["pass"])


class PreRunState(CommandListState):
    extra = "(pre-encode)"
    pipelined = True
    nextState = RunState
    commandlist = [
        (None, "seti:run_iter:{0}"),
        "set:cmdquality:{1}",
        "seti:send_statefile:{2}",
        'run:test ! -f "##TMPDIR##/final.state" || cp "##TMPDIR##/final.state" "##TMPDIR##/prev.state"',
    ]

    def __init__(self, prevState, aNum=0):
        super(PreRunState, self).__init__(prevState, aNum)
        pass_num = self.info["pass"]
        quality = str(ServerInfo.quality_y) if pass_num == 0 else "--refine"
        last = self.actorNum == ServerInfo.num_parts - 1
        send = 0 if last or pass_num == ServerInfo.passes - 1 else 1
        self.commands = [s.format(pass_num, quality, send) if s is not None else None for s in self.commands]


class LoopState(ForLoopState):
    extra = "(passes)"
    loopState = PreRunState
    exitState = CompareState
    iterKey = "pass"

    def __init__(self, prevState, aNum=0):
        super(LoopState, self).__init__(prevState, aNum)
        self.iterFin = min(ServerInfo.passes, self.actorNum + 1)


RunState.nextState = LoopState
DumpState.nextState = LoopState


class SettingsState(CommandListState):
    extra = "(setup)"
    pipelined = True
    nextState = LoopState
    commandlist = [
        ("OK:HELLO", "connect:{3}:HELLO_STATE:{2}:{1}:{4}"),
        "retrieve:{0}/{1}.y4m\0##TMPDIR##/input.y4m",
        ("OK:RETRIEVE(", None),
    ]

    def __init__(self, prevState, aNum=0, gNum=0):
        super(SettingsState, self).__init__(prevState, aNum)
        chunk = self.actorNum + ServerInfo.num_offset
        if ServerInfo.client_uniq is None:
            ServerInfo.client_uniq = util.rand_str(16)
        relay = "%s:%d" % (
            ServerInfo.state_srv_addr,
            ServerInfo.state_srv_port + gNum % ServerInfo.state_srv_threads,
        )
        self.commands = [
            s.format(ServerInfo.video_name, "%08d" % chunk, ServerInfo.client_uniq, relay, chunk + 1)
            if s is not None
            else None
            for s in self.commands
        ]


def main():
    server.options(ServerInfo)
    event = {
        "mode": 1,
        "port": ServerInfo.port_number,
        "addr": ServerInfo.host_addr,
        "nonblock": 1,
        "bg_silent": 1,
        "expect_statefile": 1,
        "cacert": ServerInfo.cacert,
        "srvcrt": ServerInfo.srvcrt,
        "srvkey": ServerInfo.srvkey,
        "bucket": ServerInfo.bucket,
    }
    server.server_launch(
        ServerInfo, event, os.environ["AWS_ACCESS_KEY_ID"], os.environ["AWS_SECRET_ACCESS_KEY"]
    )
    server.server_main_loop([], SettingsState, ServerInfo)


if __name__ == "__main__":
    main()
