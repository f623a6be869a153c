#!/usr/bin/env python3
"""PNG frames on S3 into Y4M chunks: the tests' own job file, following the logic of mu's
png2y4m_server.py command for command (settings class, state classes, ``main()``), importing
``coordinator.libmu`` where mu's imports ``libmu``.

Worker i (chunk c = i + offset) empties /tmp, makes its temporary folder, then for each of its
F frames 1 + F*c ... F*(c+1) of ``VIDEO-FORMAT/%08d.png`` retrieves that one PNG and runs the
default command, which must exit 0; last it uploads ``VIDEO-y4m_FF/%08d.y4m`` (named by c).
The default command is mu's ``./png2y4m -i -d -o ##OUTFILE## ##INFILE##``, given with
``--command`` (mu built it into the Lambda function): with ``##INFILE##`` the pattern
``##TMPDIR##/%08d.png``, each run appends the frame just retrieved (-i) and deletes it (-d).
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


def chunk_number(state):
    return state.actorNum + ServerInfo.num_offset


def fill_in(state, *values):
    """Put this actor's names into its command templates ({0}, {1}); None stays a wait."""
    state.commands = [c.format(*values) if c is not None else None for c in state.commands]


class FinalState(TerminalState):
    extra = "(finished)"


class UploadState(CommandListState):
    """Every frame is in the Y4M: upload it and let the worker go."""

    extra = "(uploading the Y4M)"
    nextState = FinalState
    commandlist = [(None, "upload:"), "quit:"]


class RetrieveAndRunState(CommandListState):
    """One frame: fetch its PNG into the temporary folder, then run the default command."""

    extra = "(retrieving a PNG and appending it to the Y4M)"
    commandlist = [
        (None, "set:inkey:{0}/{1}.png"),
        "set:targfile:##TMPDIR##/{1}.png",
        "retrieve:",
        "run:",  # sent once OK:RETRIEVING... arrives
        ("OK:RETVAL(0)", None),  # the conversion must succeed before the next frame
    ]

    def __init__(self, prevState, aNum=0):
        super(RetrieveAndRunState, self).__init__(prevState, aNum)
        frames = ServerInfo.num_frames
        frame = 1 + frames * chunk_number(self) + self.info["retrieve_iter"]
        fill_in(self, "%s-%s" % (ServerInfo.video_name, ServerInfo.in_format), "%08d" % frame)


class RetrieveLoopState(ForLoopState):
    extra = "(frame loop)"
    loopState = RetrieveAndRunState
    exitState = UploadState
    iterKey = "retrieve_iter"

    def __init__(self, prevState, aNum=0):
        super(RetrieveLoopState, self).__init__(prevState, aNum)
        self.iterFin = ServerInfo.num_frames  # read now: options() may have changed it


RetrieveAndRunState.nextState = RetrieveLoopState


class ConfigState(CommandListState):
    """Name the files for the default command and the upload; start from an empty /tmp."""

    extra = "(configuring the worker)"
    nextState = RetrieveLoopState
    commandlist = [
        ("OK:HELLO", "set:cmdinfile:##TMPDIR##/%08d.png"),  # a printf pattern for png2y4m
        "set:cmdoutfile:##TMPDIR##/{1}.y4m",
        "set:fromfile:##TMPDIR##/{1}.y4m",
        "set:outkey:{0}/{1}.y4m",
        "seti:nonblock:0",
        "run:rm -rf /tmp/*",  # a worker's /tmp is its own (Lambda, and local sandboxes)
        "run:mkdir -p ##TMPDIR##",
        None,  # wait for the mkdir's OK:RETVAL before the first frame
    ]

    def __init__(self, prevState, actorNum):
        super(ConfigState, self).__init__(prevState, actorNum)
        out_dir = "%s-y4m_%02d" % (ServerInfo.video_name, ServerInfo.num_frames)
        fill_in(self, out_dir, "%08d" % chunk_number(self))


def run():
    server.server_main_loop([], ConfigState, ServerInfo)


def main():
    server.options(ServerInfo)
    event = {
        "mode": 1,
        "port": ServerInfo.port_number,
        "addr": None,  # filled in by server_launch
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
