"""Child process for test_engine_process: trains, and freezes inside the save of
checkpoint-epoch-2 at a chosen moment so the parent can SIGKILL it there."""

import json
import sys
import time
from pathlib import Path


def main() -> None:
    args = json.loads(sys.argv[1])
    from sidestep.config.resolve import resolve
    from sidestep.engine import checkpointing as ck
    from sidestep.engine.trainer import Trainer

    marker = Path(args["marker"])

    def freeze() -> None:
        marker.write_text("frozen")
        time.sleep(600)

    real_tree, real_dir = ck._fsync_tree, ck.fsync_dir
    if args["phase"] == "before_rename":  # new files written and fsynced, not yet renamed
        def tree(folder):
            real_tree(folder)
            if "epoch-2" in folder.name:
                freeze()
        ck._fsync_tree = tree
    else:  # renamed into place, COMPLETE not yet written
        def fsync_dir(folder):
            real_dir(folder)
            if (Path(folder) / "checkpoint-epoch-2").is_dir() and \
                    not (Path(folder) / "checkpoint-epoch-2" / "COMPLETE").exists():
                freeze()
        ck.fsync_dir = fsync_dir
    cfg = resolve("fixed", args["config"]).config
    Trainer(cfg).run()


if __name__ == "__main__":
    main()
