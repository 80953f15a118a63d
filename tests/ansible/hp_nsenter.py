# SPDX-License-Identifier: GPL-3.0-or-later
# An Ansible connection plugin for hostpolicyd's tests: runs every command, and moves every file, inside
# the namespaces of a test sandbox (tests/packaging/sandbox.sh) with nsenter, so that a playbook runs
# against a throwaway systemd machine on this host without SSH. The sandbox's process id comes from
# HP_NSENTER_PID.

from __future__ import annotations

DOCUMENTATION = """
name: hp_nsenter
short_description: run in a hostpolicyd test sandbox through nsenter
description:
  - Commands run in the mount, PID, network and UTS namespaces of the process HP_NSENTER_PID.
author: hostpolicyd maintainers
"""

import os
import shlex
import subprocess

from ansible.errors import AnsibleConnectionFailure, AnsibleError
from ansible.plugins.connection import ConnectionBase

ENV = {
    "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
    "LC_ALL": "C.UTF-8",
    "HOME": "/root",
    "DEBIAN_FRONTEND": "noninteractive",
}


class Connection(ConnectionBase):
    transport = "hp_nsenter"
    has_pipelining = True
    has_tty = False

    def _argv(self, cmd):
        pid = os.environ.get("HP_NSENTER_PID")
        if not pid:
            raise AnsibleConnectionFailure("HP_NSENTER_PID is not set")
        return ["nsenter", "-t", pid, "-m", "-p", "-n", "-u", "--", "/bin/sh", "-c", cmd]

    def _connect(self):
        self._connected = True
        return self

    def _run(self, cmd, in_data=None):
        p = subprocess.Popen(
            self._argv(cmd),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=ENV,
        )
        out, err = p.communicate(in_data)
        return p.returncode, out, err

    def exec_command(self, cmd, in_data=None, sudoable=True):
        super().exec_command(cmd, in_data=in_data, sudoable=sudoable)
        return self._run(cmd, in_data)

    def put_file(self, in_path, out_path):
        super().put_file(in_path, out_path)
        with open(in_path, "rb") as f:
            data = f.read()
        rc, _, err = self._run("cat > %s" % shlex.quote(out_path), data)
        if rc != 0:
            raise AnsibleError("put %s: %s" % (out_path, err.decode(errors="replace")))

    def fetch_file(self, in_path, out_path):
        super().fetch_file(in_path, out_path)
        rc, out, err = self._run("cat %s" % shlex.quote(in_path))
        if rc != 0:
            raise AnsibleError("fetch %s: %s" % (in_path, err.decode(errors="replace")))
        with open(out_path, "wb") as f:
            f.write(out)

    def close(self):
        self._connected = False
