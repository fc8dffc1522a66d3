# IPython kernel configuration for this project's virtual environment. scripts/setup.sh copies it to
# .venv/etc/ipython/ipython_kernel_config.py, where every kernel started with .venv/bin/python reads it
# (papermill in scripts/main.sh, nbval in scripts/test.sh, JupyterLab).
#
# It drops one log line that ipykernel >= 7 prints at every kernel start: "Kernel is running over TCP without
# encryption ...". Papermill, nbval and JupyterLab start their kernels on 127.0.0.1 (not reachable from other
# machines); every message is signed with a random per-kernel key kept in a connection file readable only by
# this user, so another local user cannot send code to the kernel. Only local root could read the plain-text
# traffic. Everything else the kernel logs is kept. Delete this file to see the line again.
import logging


class _DropPlainTcpNotice(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "running over TCP without encryption" not in record.getMessage()


logging.getLogger("IPKernelApp").addFilter(_DropPlainTcpNotice())
