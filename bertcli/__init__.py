"""bertcli: pretrain BERT from raw text, fine-tune and evaluate it on GLUE-style tasks, offline."""

import time

__version__ = "0.1.0"

# When bertcli was first imported: a command's start, less the interpreter's own (tens of milliseconds). eval's
# metrics.json reports the seconds since then as `command_s`, start-up included.
STARTED = time.perf_counter()
