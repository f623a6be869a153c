#!/usr/bin/env python3
"""PNG frames on S3 into Y4M chunks: the tests' own job file, written the way mu's
png2y4m_server.py is (settings class, state classes, ``main()``), importing
``coordinator.libmu`` where mu's imports ``libmu``.

Worker i reads frames 1 + F*(i+offset) ... F*(i+offset+1) of ``VIDEO-FORMAT/%08d.png`` and
writes chunk i+offset as ``VIDEO-y4m_FF/%08d.y4m``. The command for the bare ``run:`` comes
from ``--command``, as mu's came from the Lambda function it was built into.
"""

import os

from coordinator.libmu import CommandListState, ForLoopState, TerminalState, server


class ServerInfo(object):
    port_number = 13579

    video_name = "sintel-1k"
    num_frames = 6
    num_offset = 0
    num_parts = 1
    lambda_function = "png2y4m"
    regions = ["us-east-1"]
    bucket = "excamera-us-east-1"
    in_format = "png16"
    out_file = None
    profiling = None

    cacert = None
    srvcrt = None
    srvkey = None


class FinalState(TerminalState):
    extra = "(finished)"


class UploadState(CommandListState):
    extra = "(converting and uploading)"
    nextState = FinalState
    commandlist = [(None, "run:"), ("OK:RETVAL(0)", "upload:"), ("OK:UPLOAD(", "quit:")]


class RetrieveState(CommandListState):
    extra = "(retrieving a frame)"
    commandlist = [
        (None, "set:inkey:{0}/{1}.png"),
        "set:targfile:##TMPDIR##/{1}.png",
        "retrieve:",
        ("OK:RETRIEVE(", None),
    ]

    def __init__(self, prevState, aNum=0):
        super(RetrieveState, self).__init__(prevState, aNum)
        in_name = "%s-%s" % (ServerInfo.video_name, ServerInfo.in_format)
        chunk = self.actorNum + ServerInfo.num_offset
        frame = 1 + ServerInfo.num_frames * chunk + self.info["retrieve_iter"]
        self.commands = [s.format(in_name, "%08d" % frame) if s is not None else None for s in self.commands]


class RetrieveLoopState(ForLoopState):
    extra = "(retrieve loop)"
    loopState = RetrieveState
    exitState = UploadState
    iterKey = "retrieve_iter"

    def __init__(self, prevState, aNum=0):
        super(RetrieveLoopState, self).__init__(prevState, aNum)
        self.iterFin = ServerInfo.num_frames


RetrieveState.nextState = RetrieveLoopState


class ConfigState(CommandListState):
    extra = "(configuring the worker)"
    nextState = RetrieveLoopState
    commandlist = [
        ("OK:HELLO", "set:cmdinfile:##TMPDIR##/*.png"),
        "set:cmdoutfile:##TMPDIR##/{1}.y4m",
        "set:fromfile:##TMPDIR##/{1}.y4m",
        "set:outkey:{0}/{1}.y4m",
        "seti:nonblock:0",
        # mu's job runs "run:rm -rf /tmp/*" here; left out until every local worker has a
        # private /tmp, so a test run cannot empty the machine's /tmp.
        "run:mkdir -p ##TMPDIR##",
        ("OK:RETVAL(0)", None),
    ]

    def __init__(self, prevState, actorNum):
        super(ConfigState, self).__init__(prevState, actorNum)
        out_name = "%s-y4m_%02d" % (ServerInfo.video_name, ServerInfo.num_frames)
        chunk = self.actorNum + ServerInfo.num_offset
        self.commands = [s.format(out_name, "%08d" % chunk) if s is not None else None for s in self.commands]


def run():
    server.server_main_loop([], ConfigState, ServerInfo)


def main():
    server.options(ServerInfo)
    event = {
        "mode": 1,
        "port": ServerInfo.port_number,
        "addr": None,
        "nonblock": 0,
        "cacert": ServerInfo.cacert,
        "srvcrt": ServerInfo.srvcrt,
        "srvkey": ServerInfo.srvkey,
        "bucket": ServerInfo.bucket,
    }
    server.server_launch(
        ServerInfo, event, os.environ["AWS_ACCESS_KEY_ID"], os.environ["AWS_SECRET_ACCESS_KEY"]
    )
    run()


if __name__ == "__main__":
    main()
